"""Vocabulary: order, limits, the bilm-tf file format, bad files, word counting."""
from collections import Counter

import pytest

from elmo_dist.data.corpus import Corpus, SkipReport
from elmo_dist.data.vocab import Vocabulary, count_words

from tests.golden import FIXTURE_DIR

FIXTURE_VOCAB = FIXTURE_DIR / "vocab_test.txt"
COUNTS = Counter({"the": 5, "cat": 2, "a": 2, "dog": 2, "zebra": 1, "ant": 1, "sat": 3})


def test_order_specials_then_frequency_then_word():
    v = Vocabulary.build(COUNTS)
    assert v.words == ["<S>", "</S>", "<UNK>", "the", "sat", "a", "cat", "dog", "ant", "zebra"]
    assert (v.bos_id, v.eos_id, v.unk_id) == (0, 1, 2)
    assert len(v) == 10


def test_min_count_and_max_size():
    assert Vocabulary.build(COUNTS, min_count=2).words == ["<S>", "</S>", "<UNK>", "the", "sat", "a", "cat", "dog"]
    assert Vocabulary.build(COUNTS, min_count=4).words == ["<S>", "</S>", "<UNK>", "the"]
    assert Vocabulary.build(COUNTS, max_size=5).words == ["<S>", "</S>", "<UNK>", "the", "sat"]
    assert Vocabulary.build(COUNTS, max_size=3).words == ["<S>", "</S>", "<UNK>"]
    assert len(Vocabulary.build(COUNTS, max_size=100)) == 10


def test_specials_in_counts_not_duplicated():
    v = Vocabulary.build(Counter({"<S>": 9, "x": 1, "<UNK>": 4}))
    assert v.words == ["<S>", "</S>", "<UNK>", "x"]


@pytest.mark.parametrize(
    "kwargs, name",
    [({"min_count": 0}, "min_count"), ({"min_count": 1.5}, "min_count"), ({"max_size": 2}, "max_size"),
     ({"max_size": "10"}, "max_size")],
)
def test_build_validates(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Vocabulary.build(COUNTS, **kwargs)


def test_lookup_and_encode():
    v = Vocabulary.build(COUNTS)
    assert v.id("the") == 3 and v.id("zebra") == 9
    assert v.id("unicorn") == 2
    assert v.encode(["<S>", "the", "unicorn", "sat", "</S>"]) == [0, 3, 2, 4, 1]
    assert "cat" in v and "unicorn" not in v


def test_file_round_trip(tmp_path):
    v = Vocabulary.build(Counter({"café": 3, "日本": 2, "x": 1}))
    path = tmp_path / "vocab.txt"
    v.save(path)
    assert path.read_bytes() == "<S>\n</S>\n<UNK>\ncafé\n日本\nx\n".encode()
    assert Vocabulary.from_file(path) == v
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.txt"]  # no temporary file left


def test_save_overwrites_atomically(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("old\n")
    Vocabulary.build(Counter({"new": 1})).save(path)
    assert path.read_text().split("\n") == ["<S>", "</S>", "<UNK>", "new", ""]


@pytest.mark.usefixtures("require_elmo_fixture")
def test_fixture_file_with_specials_in_the_middle():
    v = Vocabulary.from_file(FIXTURE_VOCAB)
    # The file has 457 newlines and a last line without one; <S>, <UNK>, </S> on lines 21, 118, 225.
    assert len(v) == 458
    assert (v.bos_id, v.unk_id, v.eos_id) == (20, 117, 224)
    assert v.words[0] == "good"


def test_crlf_file(tmp_path):
    path = tmp_path / "v.txt"
    path.write_bytes(b"<S>\r\n</S>\r\n<UNK>\r\nword\r\n\r\n")
    assert Vocabulary.from_file(path).words == ["<S>", "</S>", "<UNK>", "word"]


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"<S>\n</S>\n<UNK>\nthe\nthe\n", "'the' appears twice"),
        (b"<S>\n</S>\nthe\n", "lacks the special tokens \\['<UNK>'\\]"),
        (b"<S>\n\n</S>\n<UNK>\n", "line 2 is empty"),
        (b"<S>\n</S>\n<UNK>\n\xff\n", "not UTF-8"),
    ],
)
def test_bad_files(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        Vocabulary.from_file(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        Vocabulary.from_file(tmp_path / "nope.txt")


def test_count_words(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes(b"the cat sat\n\nthe dog\n\xff\nthe end\n")
    report = SkipReport()
    counts = count_words(Corpus([path]), report)
    assert counts == Counter({"the": 3, "cat": 1, "sat": 1, "dog": 1, "end": 1})
    assert (report.lines_read, report.blank, report.invalid_utf8) == (3, 1, 1)
    assert count_words(Corpus([path]), progress=True) == counts
