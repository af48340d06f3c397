"""Data pipeline: corpus files -> tokenised lines -> vocabulary -> batches of ELMo windows.

``Corpus`` streams lines from files (byte regions, skip counting), ``Vocabulary`` is the
bilm-tf vocabulary file, ``WindowBatcher`` cuts each batch row's token stream into windows
with next/previous-token targets, and ``batch_to_ids`` gives ELMo character ids for inference.
"""
from elmo_dist.data.batcher import IGNORE_INDEX, Batch, WindowBatcher
from elmo_dist.data.chars import (
    BOS_TOKEN,
    EOS_TOKEN,
    MAX_WORD_LENGTH,
    UNK_TOKEN,
    CharIdCache,
    batch_to_ids,
    word_to_char_ids,
)
from elmo_dist.data.corpus import Corpus, SkipReport, resolve_corpus_paths, split_regions
from elmo_dist.data.ptb import PTB_SPLITS, ptb_paths
from elmo_dist.data.tokenize import TOKENIZERS, get_tokenizer
from elmo_dist.data.vocab import SPECIAL_TOKENS, Vocabulary, count_words

__all__ = [
    "BOS_TOKEN",
    "EOS_TOKEN",
    "IGNORE_INDEX",
    "MAX_WORD_LENGTH",
    "PTB_SPLITS",
    "SPECIAL_TOKENS",
    "TOKENIZERS",
    "UNK_TOKEN",
    "Batch",
    "CharIdCache",
    "Corpus",
    "SkipReport",
    "Vocabulary",
    "WindowBatcher",
    "batch_to_ids",
    "count_words",
    "get_tokenizer",
    "ptb_paths",
    "resolve_corpus_paths",
    "split_regions",
    "word_to_char_ids",
]
