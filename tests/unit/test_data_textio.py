"""Line breaks, encodings and binary files as every reader sees them (data.textio, Corpus)."""
import pytest

from elmo_dist.data import Corpus, SkipReport, split_regions
from elmo_dist.data.textio import EncodingError, iter_lines, sniff_text_file, split_lines, wide_encoding

# Python's own line splitting breaks at each of these; the package breaks at "\n" only.
SEPARATORS = ["\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]


@pytest.mark.parametrize("sep", SEPARATORS)
def test_only_newline_ends_a_line(tmp_path, sep):
    text = f"a b{sep}c d\r\ne f\n"
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    assert len(text.splitlines()) == 3  # what a universal-newline reader would count
    expected = [f"a b{sep}c d", "e f"]
    assert split_lines(text) == expected and list(iter_lines(path)) == expected
    assert [len(t) for t in Corpus([path]).iter_sentences()] == [4, 2]  # sep is whitespace


def test_split_lines_final_newline_and_bom(tmp_path):
    assert split_lines("a\nb") == split_lines("a\nb\n") == ["a", "b"]
    assert split_lines("a\n\nb\n") == ["a", "", "b"]
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbfhello\nworld")
    assert list(iter_lines(path)) == ["hello", "world"]


@pytest.mark.parametrize("codec,name", [("utf-16", "UTF-16LE"), ("utf-16-be", "UTF-16BE"), ("utf-32", "UTF-32LE"),
                                        ("utf-32-be", "UTF-32BE")])
def test_wide_encodings_refused_with_iconv(tmp_path, codec, name):
    data = "the cat\n".encode(codec)
    if not codec.endswith(("16", "32")):  # the -be codecs write no mark: add it
        data = "\ufeff".encode(codec) + data
    path = tmp_path / "w.txt"
    path.write_bytes(data * 20)
    assert wide_encoding(data) == name
    with pytest.raises(EncodingError, match=rf"{name}.*iconv -f UTF-{name[4:6]} -t UTF-8"):
        sniff_text_file(path)
    with pytest.raises(EncodingError):
        Corpus([path])


def test_utf8_file_whose_first_line_starts_with_ff_fe_is_not_utf16(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"\xff\xfe bad\ngood line\n")  # invalid UTF-8 first line, no NUL: not UTF-16
    assert sniff_text_file(path) == "text"
    report = SkipReport()
    assert list(Corpus([path]).iter_sentences(report)) == [["good", "line"]] and report.invalid_utf8 == 1


def test_binary_files_left_out_of_the_byte_stream_and_counted_once(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"one two\nthree\n")
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(300))
    (tmp_path / "c.txt").write_bytes(b"four five six\n")
    corpus = Corpus([tmp_path])
    assert [p.name for p in corpus.files] == ["a.txt", "c.txt"] and corpus.total_bytes == 14 + 14
    for n in (1, 3, 7):
        total, lines = SkipReport(), []
        for start, end in split_regions(corpus.total_bytes, n):
            report = SkipReport()
            lines += corpus.iter_sentences_between(start, end, report)
            total.merge(report)
        assert lines == [["one", "two"], ["three"], ["four", "five", "six"]]
        assert total.binary_files == 1 and "1 binary file left out" in total.summary()


def test_corpus_of_binary_files_only_and_non_regular_paths(tmp_path):
    (tmp_path / "b.bin").write_bytes(bytes(64))
    with pytest.raises(ValueError, match="no text file.*b.bin"):
        Corpus([tmp_path / "b.bin"])
    with pytest.raises(ValueError, match="character device"):
        Corpus(["/dev/null"])


def test_inside_long_line(tmp_path):
    path = tmp_path / "t.txt"
    path.write_bytes(b"short\n" + b"x" * 500 + b"\nend\n")
    corpus = Corpus([path], max_line_bytes=100)
    assert not corpus.inside_long_line(0) and not corpus.inside_long_line(3)
    assert all(corpus.inside_long_line(k) for k in (6, 7, 300, 505))
    assert not corpus.inside_long_line(507)  # "end"
