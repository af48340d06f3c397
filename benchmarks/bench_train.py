"""End-to-end training throughput on CPU: one optimizer step of the real path (PTB windows from
the WindowBatcher, the biLM, the DeepSpeed engine, Adagrad, clipping) per preset.

    python -m pytest benchmarks/bench_train.py --benchmark-only

tokens_per_s = batch rows x window / median step time. The FLOP count per token (forward +
backward ~ 3x forward matmul FLOPs) gives the achieved GFLOP/s; the character convolutions are
counted over the slots they run over (each token's characters, see ``CharCNNEncoder.conv_slots``),
not the 50-slot frame, so skipped padding work does not count as achieved FLOPs.
"""
from typing import Optional

import pytest
import torch

from benchmarks.conftest import median_s

from elmo_dist.data import Corpus, Vocabulary, WindowBatcher, count_words, ptb_paths
from elmo_dist.model import BiLM, preset
from elmo_dist.train.distributed import build_optimizer, deepspeed_config, initialize_engine
from elmo_dist.train.config import OptimConfig, TrainConfig
from elmo_dist.train.malloc import keep_freed_memory
from elmo_dist.train.objective import LMObjective
from elmo_dist.train.rundir import cache_dir

B, T = 32, 20


@pytest.fixture(scope="module")
def ptb():
    paths = ptb_paths(cache_dir() / "ptb")
    corpus = Corpus([paths["train"]])
    return corpus, Vocabulary.build(count_words(corpus))


def forward_flops_per_token(model: BiLM, unique_fraction: float, conv_slots: Optional[float] = None) -> float:
    """Matmul/conv FLOPs of one token's forward pass (2 per multiply-add). ``conv_slots``: the
    mean character slots the convolutions run over per distinct token (``conv_slots()`` of the
    encoder, ~12 on PTB); default the whole frame, what a full-width CNN computes."""
    c = model.config
    slots = c.max_characters_per_token if conv_slots is None else conv_slots
    cnn = sum(w * c.char_embed_dim * n * (slots - w + 1) for w, n in c.filters)
    highway = c.n_highway * 2 * c.n_filters ** 2
    proj = c.n_filters * c.projection_dim
    lstm = 2 * c.n_layers * (2 * c.projection_dim * 4 * c.lstm_dim + c.lstm_dim * c.projection_dim)
    softmax = 2 * c.projection_dim * c.vocab_size  # both directions score every token
    return 2.0 * ((cnn + highway + proj) * unique_fraction + lstm + softmax)


class TrainStep:
    """``elmo-dist pretrain``'s optimizer step, built as the Trainer builds it (kept heap, seeded
    BiLM, DeepSpeed engine, the WindowBatcher's windows, LSTM state carried between steps);
    ``next_batch()`` then ``run(batch)`` is one step."""

    def __init__(self, cfg, corpus, vocab):
        keep_freed_memory()  # as the Trainer does
        torch.manual_seed(0)
        self.bilm = BiLM(cfg)
        objective = LMObjective(self.bilm)
        self.params = sum(p.numel() for p in objective.parameters())
        optim_cfg, train_cfg = OptimConfig(), TrainConfig(batch_size=B, num_steps=T)
        self.engine = initialize_engine(objective, build_optimizer(self.bilm.parameters(), optim_cfg),
                                        deepspeed_config(train_cfg, optim_cfg))
        self.batches = iter(WindowBatcher(corpus, vocab, B, T))
        self.state = None

    def next_batch(self):
        return next(self.batches)

    def run(self, batch) -> None:
        out, new_state = self.engine(batch.char_ids, batch.fwd_targets, batch.bwd_targets, self.state)
        self.engine.backward(out.loss)
        self.engine.step()
        self.state = new_state.detach()


@pytest.mark.parametrize("name", ["tiny", "small"])
def test_train_step(benchmark, ptb, name):
    corpus, vocab = ptb
    train = TrainStep(preset(name, vocab_size=len(vocab)), corpus, vocab)
    bilm = train.bilm
    uniques, slots = [], []

    def step():
        batch = train.next_batch()
        unique = torch.unique(batch.char_ids.view(-1, 50), dim=0)  # (U, 50)
        uniques.append(unique.shape[0] / (B * T))
        slots.append(float(bilm.encoder.conv_slots(unique).float().mean()))
        train.run(batch)

    benchmark.group = "train-step"
    benchmark.pedantic(step, rounds=8 if name == "tiny" else 4, warmup_rounds=1)
    median = median_s(benchmark)
    if median is None:  # --benchmark-disable: ran once, nothing to record
        return
    frac = sum(uniques) / len(uniques)
    conv_slots = sum(slots) / len(slots)
    flops = 3 * forward_flops_per_token(bilm, frac, conv_slots) * B * T
    benchmark.extra_info.update(preset=name, tokens_per_s=B * T / median, gflop_per_s=flops / median / 1e9,
                                unique_token_fraction=frac, conv_slots=conv_slots, params_millions=bilm.num_parameters() / 1e6)
