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
