"""Corpus reader: path specs, skip counting, line endings, byte regions."""
import tracemalloc

import pytest

from elmo_dist.data.corpus import Corpus, SkipReport, resolve_corpus_paths, split_regions


def write(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def whole_line(text):
    """A tokenizer that returns the line itself, so stray '\\r' or BOM would show."""
    return [text] if text.strip() else []


# ---- path specs -------------------------------------------------------------------------


def test_file_directory_and_glob_specs(tmp_path):
    a = write(tmp_path / "d" / "a.txt", b"a\n")
    b = write(tmp_path / "d" / "sub" / "b.txt", b"b\n")
    c = write(tmp_path / "d" / "c.log", b"c\n")
    write(tmp_path / "d" / ".hidden", b"h\n")
    write(tmp_path / "d" / ".git" / "x.txt", b"x\n")
    assert resolve_corpus_paths([str(a)]) == [a]
    assert resolve_corpus_paths([tmp_path / "d"]) == [a, c, b]
    assert resolve_corpus_paths([str(tmp_path / "d" / "*.txt")]) == [a]
    assert resolve_corpus_paths([str(tmp_path / "d" / "**" / "*.txt")]) == [a, b]
    # Duplicates keep their first place; spec order is kept.
    assert resolve_corpus_paths([str(c), str(tmp_path / "d"), str(a)]) == [c, a, b]


def test_spec_matching_nothing(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.txt"):
        resolve_corpus_paths([str(tmp_path / "nothing.txt")])
    with pytest.raises(FileNotFoundError, match=r"\*\.md"):
        resolve_corpus_paths([str(tmp_path / "*.md")])
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(FileNotFoundError):
        resolve_corpus_paths([str(tmp_path / "empty_dir")])
    with pytest.raises(ValueError, match="no corpus"):
        resolve_corpus_paths([])


def test_sizes_and_total(tmp_path):
    a = write(tmp_path / "a.txt", b"one two\n")
    b = write(tmp_path / "b.txt", b"")
    c = write(tmp_path / "c.txt", b"three\n")
    corpus = Corpus([a, b, c])
    assert corpus.files == [a, b, c]
    assert corpus.sizes == [8, 0, 6]
    assert corpus.total_bytes == 14


# ---- reading and skipping ---------------------------------------------------------------


def test_invalid_utf8_line_skipped_and_counted(tmp_path):
    f = write(tmp_path / "x.txt", b"good line\n\xff\xfe bad\ncaf\xc3\xa9 ok\nhalf \xc3\n")
    report = SkipReport()
    assert list(Corpus([f]).iter_sentences(report)) == [["good", "line"], ["café", "ok"]]
    assert report.as_dict() == {
        "lines_read": 2, "tokens_read": 4, "invalid_utf8": 2, "blank": 0, "too_long": 0, "empty_files": 0,
        "binary_files": 0,
    }


def test_empty_file_and_blank_lines(tmp_path):
    e = write(tmp_path / "a_empty.txt", b"")
    f = write(tmp_path / "b.txt", b"x y\n\n   \n\t\r\nz\n")
    report = SkipReport()
    assert list(Corpus([e, f]).iter_sentences(report)) == [["x", "y"], ["z"]]
    assert (report.blank, report.empty_files, report.lines_read, report.tokens_read) == (3, 1, 2, 3)


def test_crlf_last_line_without_newline_and_bom(tmp_path):
    f = write(tmp_path / "x.txt", b"\xef\xbb\xbffirst line\r\nsecond\r\nthird")
    assert list(Corpus([f], tokenizer=whole_line).iter_sentences()) == [["first line"], ["second"], ["third"]]


def test_max_line_bytes_boundary(tmp_path):
    f = write(tmp_path / "x.txt", b"abcd\nabcde\nabcd\r\nabcdef\nab")
    report = SkipReport()
    assert list(Corpus([f], tokenizer=whole_line, max_line_bytes=4).iter_sentences(report)) == [
        ["abcd"], ["abcd"], ["ab"],
    ]
    assert report.too_long == 2


def test_huge_line_skipped_without_holding_it(tmp_path):
    f = write(tmp_path / "x.txt", b"short one\n" + b"x" * 5_000_000 + b"\nafter it\n" + b"y" * 3_000_000)
    report = SkipReport()
    corpus = Corpus([f], max_line_bytes=1000)
    tracemalloc.start()
    try:
        sentences = list(corpus.iter_sentences(report))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert sentences == [["short", "one"], ["after", "it"]]
    assert report.too_long == 2
    assert peak < 1_000_000, f"reading held {peak} bytes at once"


def test_custom_tokenizer_name(tmp_path):
    f = write(tmp_path / "x.txt", b"Don't stop.\n")
    assert list(Corpus([f], tokenizer="treebank").iter_sentences()) == [["Do", "n't", "stop", "."]]
    with pytest.raises(ValueError, match="choose one of"):
        Corpus([f], tokenizer="bogus")
    with pytest.raises(ValueError, match="max_line_bytes"):
        Corpus([f], max_line_bytes=0)


def test_report_merge_summary():
    a = SkipReport(lines_read=3, tokens_read=12, invalid_utf8=1, blank=2, too_long=0, empty_files=1)
    b = SkipReport(lines_read=1, tokens_read=2, too_long=4)
    assert a.merge(b) is a
    assert a.as_dict() == {
        "lines_read": 4, "tokens_read": 14, "invalid_utf8": 1, "blank": 2, "too_long": 4, "empty_files": 1,
        "binary_files": 0,
    }
    assert a.lines_skipped == 7
    assert a.summary() == "read 4 lines (14 tokens); skipped 1 invalid UTF-8, 2 blank, 4 too long; 1 empty file"
    assert "\n" not in a.summary()
    assert SkipReport.from_dict(a.as_dict()) == a


# ---- byte regions -----------------------------------------------------------------------

# Four files; the second is empty, the last has no final newline. Kept lines, in order:
FILES = [
    b"the cat sat\nlong line number two here\n\nx\n",
    b"",
    b"a b c d e f\n\xff bad\nshort\nsomewhat longer words are in this one\n",
    b"\xef\xbb\xbfq\r\nlast words",
]
LINES = [
    ["the", "cat", "sat"], ["long", "line", "number", "two", "here"], ["x"],
    ["a", "b", "c", "d", "e", "f"], ["short"], ["somewhat", "longer", "words", "are", "in", "this", "one"],
    ["q"], ["last", "words"],
]
# Global offset just after each kept line. File 0 is 12 + 26 + 1 + 2 = 41 bytes, file 2 is
# 12 + 6 + 6 + 38 = 62 bytes (starts at 41), file 3 is 3 (BOM) + 3 + 10 = 16 bytes (starts at 103).
ENDS = [12, 38, 41, 41 + 12, 41 + 24, 41 + 62, 103 + 6, 103 + 16]


@pytest.fixture
def corpus(tmp_path):
    return Corpus([write(tmp_path / f"{i}.txt", data) for i, data in enumerate(FILES)])


def test_offsets_after_each_line(corpus):
    assert corpus.total_bytes == 119
    got = list(corpus.iter_lines_between(0, corpus.total_bytes))
    assert [tokens for _, tokens in got] == LINES
    assert [end for end, _ in got] == ENDS


def test_every_cut_point_splits_lines_once(corpus):
    for cut in range(corpus.total_bytes + 1):
        left = list(corpus.iter_sentences_between(0, cut))
        right = list(corpus.iter_sentences_between(cut, corpus.total_bytes))
        assert left + right == LINES, f"cut at byte {cut}"


@pytest.mark.parametrize("n", [1, 2, 3, 5, 7, 16, 50, 119, 200])
def test_regions_partition_lines_and_counts(corpus, n):
    regions = split_regions(corpus.total_bytes, n)
    assert regions[0][0] == 0 and regions[-1][1] == corpus.total_bytes
    assert all(regions[i][1] == regions[i + 1][0] for i in range(n - 1))
    got, total = [], SkipReport()
    for start, end in regions:
        report = SkipReport()
        got.extend(corpus.iter_sentences_between(start, end, report))
        total.merge(report)
    assert got == LINES
    assert total.as_dict() == {
        "lines_read": 8, "tokens_read": 26, "invalid_utf8": 1, "blank": 1, "too_long": 0, "empty_files": 1,
        "binary_files": 0,
    }


def test_resume_from_offset(corpus):
    for k, end in enumerate(ENDS):
        assert list(corpus.iter_sentences_between(end, corpus.total_bytes)) == LINES[k + 1 :]


def test_region_bad_arguments(corpus):
    with pytest.raises(ValueError, match="start <= end"):
        list(corpus.iter_lines_between(10, 5))
    with pytest.raises(ValueError, match="num_regions"):
        split_regions(100, 0)
