"""Shared test data: a tiny, learnable corpus."""
from pathlib import Path

import torch

# Six fixed sentences in random order: learnable (a biLM that reads context predicts most words),
# unlike random words, whose perplexity floor is the vocabulary size.
SENTENCES = ["the cat sat on a mat", "dogs ran far away from big red trucks", "small blue cars stop near our old house",
             "a river runs by the house", "the old dog sleeps all day", "big trucks and small cars share the road"]


def write_corpus(path: Path, lines: int, seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    rows = [SENTENCES[int(i)] for i in torch.randint(0, len(SENTENCES), (lines,), generator=g)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def micro_run_config(train_file, valid_file, lr=3e-3, **train_kw):
    """A RunConfig of a biLM small enough for a step in milliseconds (DeepSpeed's start-up dominates)."""
    from elmo_dist.model import ModelConfig
    from elmo_dist.train import DataConfig, OptimConfig, RunConfig, TrainConfig
    model = ModelConfig(lstm_dim=16, projection_dim=8, n_layers=2, char_embed_dim=4,
                        filters=[[1, 8], [2, 8], [3, 8]], n_highway=1, dropout=0.1)
    data = DataConfig(train=[str(train_file)], valid=[str(valid_file)])
    optim = OptimConfig(optimizer="adam", lr=lr)
    train = TrainConfig(**{**dict(batch_size=4, num_steps=6, max_steps=8, log_every=1, eval_every=0,
                                  checkpoint_every=4, wandb_mode="disabled"), **train_kw})
    return RunConfig(model, data, optim, train)
