"""Data pipeline throughput: tokenize + character ids + batching, in tokens/s, on PTB train.

The pipeline runs in the training process between steps, so its rate must stay far above the
training step's (the report divides the two: "headroom"). Variants, timed round-robin on the
same text (the first lines of PTB train, about 20 batches of 128 rows x 20 tokens):

  allennlp-style       the baseline: each line split, <S>/</S> added, every token mapped to its
                       50 character ids afresh (AllenNLP's ELMoCharacterMapper, no cache), vocab
                       ids by dict, padded (B, T_max, 50) tensors per 128 sentences
  tokenize             Corpus: read, decode and split the lines only (whitespace tokenizer)
  tokenize-treebank    the same with nltk's Treebank tokenizer (for raw, untokenized text)
  char-ids             CharIdCache.ids on the token stream, starting from an empty cache
  batcher              WindowBatcher: the whole training pipeline (regions, windows, vocab
                       ids, char ids, targets), a fresh batcher (empty caches) per call
  batcher-treebank     the same on the Treebank tokenizer

tokens/s counts window positions (B x T per batch; every one a real token in training) or, for
the line-based variants, the same number of tokens (words plus <S> and </S>).

    python -m pytest benchmarks/bench_data.py --benchmark-only
"""
from __future__ import annotations

import itertools

import pytest
import torch

from benchmarks.conftest import interleaved

from elmo_dist.data import (BOS_TOKEN, EOS_TOKEN, CharIdCache, Corpus, Vocabulary, WindowBatcher, count_words,
                            ptb_paths, word_to_char_ids)
from elmo_dist.data.tokenize import get_tokenizer
from elmo_dist.train.rundir import cache_dir

B, T, N_BATCHES = 128, 20, 20
TOKENS = B * T * N_BATCHES


@pytest.fixture(scope="module")
def ptb():
    path = ptb_paths(cache_dir() / "ptb")["train"]
    vocab = Vocabulary.build(count_words(Corpus([path])))
    lines, n = [], 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                lines.append(line)
                n += len(line.split()) + 2
                if n >= TOKENS:
                    break
    return path, vocab, lines


def allennlp_style(lines: list[str], vocab: Vocabulary) -> int:
    index, unk = vocab.index, vocab.unk_id
    n = 0
    for start in range(0, len(lines), B):
        sents = [[BOS_TOKEN, *line.split(), EOS_TOKEN] for line in lines[start:start + B]]
        width = max(len(s) for s in sents)
        chars = torch.zeros(len(sents), width, 50, dtype=torch.long)  # (B, T_max, 50)
        ids = torch.zeros(len(sents), width, dtype=torch.long)  # (B, T_max)
        for i, sent in enumerate(sents):
            chars[i, :len(sent)] = torch.tensor([word_to_char_ids(w) for w in sent])
            ids[i, :len(sent)] = torch.tensor([index.get(w, unk) for w in sent])
            n += len(sent)
    return n


def tokenize(lines: list[str], name: str) -> list[list[str]]:
    split = get_tokenizer(name)
    return [[BOS_TOKEN, *split(line), EOS_TOKEN] for line in lines]


def batches(path, vocab: Vocabulary, tokenizer: str) -> int:
    batcher = WindowBatcher(Corpus([path], tokenizer=tokenizer), vocab, B, T)
    for batch in itertools.islice(batcher, N_BATCHES):
        assert batch.char_ids.shape == (B, T, 50)
    return N_BATCHES * B * T


def test_data_pipeline(benchmark, ptb):
    path, vocab, lines = ptb
    stream = [w for sent in tokenize(lines, "whitespace") for w in sent]
    counts = {}

    def run(name, fn):
        def call():
            counts[name] = fn()
        return call

    variants = {
        "allennlp-style": run("allennlp-style", lambda: allennlp_style(lines, vocab)),
        "tokenize": run("tokenize", lambda: sum(len(s) + 2 for s in itertools.islice(
            Corpus([path]).iter_sentences(), len(lines)))),
        "tokenize-treebank": run("tokenize-treebank", lambda: sum(len(s) for s in tokenize(lines, "treebank"))),
        "char-ids": run("char-ids", lambda: len(CharIdCache().ids(stream))),
        "batcher": run("batcher", lambda: batches(path, vocab, "whitespace")),
        "batcher-treebank": run("batcher-treebank", lambda: batches(path, vocab, "treebank")),
    }
    benchmark.group = "data-pipeline"
    benchmark.extra_info.update(corpus="PTB train", batch_rows=B, window=T, batches=N_BATCHES, lines=len(lines))
    rows = interleaved(benchmark, variants, rounds=3, warmup=1, baseline="allennlp-style", memory=False)
    for name, row in rows.items():
        row["tokens"] = counts[name]
        row["tokens_per_s"] = counts[name] / row["median_s"]
    for row in rows.values():  # per token: the variants see slightly different token counts
        row["speedup_vs_baseline"] = row["tokens_per_s"] / rows["allennlp-style"]["tokens_per_s"]
