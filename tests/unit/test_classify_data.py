"""Classifier inputs: label tables and folders (and their one-line errors), BBC News, the split."""
from collections import Counter

import pytest

from elmo_dist.classify.bbc import bbc_data_dir, load_bbc
from elmo_dist.classify.data import keep_labelled, read_folders, read_labels, read_table, stratified_split
from elmo_dist.classify.text import document_tokens, ptb_normalise
from elmo_dist.cli import main


def write(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def test_tsv_and_csv_tables(tmp_path):
    tsv = write(tmp_path / "a.tsv", "label\ttext\nsport\tGoal !\nnews\tVote \"now\"\nsport\tGoal !\n\nnews\tTax\n")
    docs = read_table(tsv)
    assert docs.classes == ["news", "sport"]
    assert docs.texts == ["Goal !", 'Vote "now"', "Tax"] and docs.labels == [1, 0, 0]
    assert docs.rows == [0, 1, 3] and docs.ids[2] == "a.tsv:6"  # the duplicate row 2 dropped, the blank line skipped
    assert docs.report["duplicates_removed"] == 1 and docs.splits is None
    csv = write(tmp_path / "b.csv", '\ufefftext,label,split\n"Hello, world",x,train\nbye,y,valid\nhi,x,TEST\n')
    docs = read_labels(csv)
    assert docs.texts[0] == "Hello, world" and docs.splits == ["train", "dev", "test"]


@pytest.mark.parametrize("name,content,needle", [
    ("e.csv", "", "empty"),
    ("e.tsv", "text\tlabel\n", "no data rows"),
    ("m.csv", "text,category\nhello,x\n", "no 'label' column"),
    ("m.tsv", "text,label\nhello,x\nbye,y\n", "name the file .csv"),
    ("one.csv", "text,label\na,x\nb,x\n", "only the class 'x'"),
    ("l1.csv", "text,label\ncaf\xe9,x\nb,y\n".encode("latin-1"), "not valid UTF-8 (byte 0xe9 on line 2)"),
    ("u16.csv", "text,label\na,x\n".encode("utf-16"), "UTF-16"),
    ("f.tsv", "text\tlabel\na\tx\tz\n", "line 2: 3 fields, the header has 2"),
    ("nolabel.csv", "text,label\na,x\nb,\n", "line 3: empty label"),
    ("notext.csv", "text,label\na,x\n ,y\n", "line 3: empty text"),
    ("split.csv", "text,label,split\na,x,train\nb,y,holdout\n", "split 'holdout' is not train, dev or test"),
    ("nodev.csv", "text,label,split\na,x,train\nb,y,test\n", "no dev rows"),
    ("q.csv", 'text,label\n"a,x\nb,y\n', "malformed CSV"),
    ("t.json", "{}", "unknown label file type"),
])
def test_bad_label_files_are_one_clear_error(tmp_path, name, content, needle):
    path = write(tmp_path / name, content)
    with pytest.raises(ValueError) as e:
        read_labels(path)
    message = str(e.value)
    assert needle in message and name in message and "\n" not in message, message


def test_bad_label_file_on_the_command_line(tmp_path, capsys):
    path = write(tmp_path / "bad.csv", "text,category\nhello,x\n")
    code = main(["classify", "--labels", str(path), "--layers", str(tmp_path / "x.hdf5"), "--out",
                 str(tmp_path / "o"), "--wandb-mode", "disabled", "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "no 'label' column" in err, err


def test_folder_per_class_reads_latin1_and_needs_two_classes(tmp_path):
    write((tmp_path / "pos").mkdir() or tmp_path / "pos" / "1.txt", "good\n")
    write(tmp_path / "pos" / "2.txt", "caf\xe9 fine".encode("latin-1"))
    write(tmp_path / "pos" / ".hidden", "x")
    write((tmp_path / "neg").mkdir() or tmp_path / "neg" / "1.txt", "bad")
    write(tmp_path / "neg" / "2.txt", "  \n")
    docs = read_labels(tmp_path)
    assert docs.classes == ["neg", "pos"] and docs.ids == ["neg/1.txt", "pos/1.txt", "pos/2.txt"]
    assert docs.texts[2] == "café fine" and docs.report["latin1_files"] == 1
    assert docs.report["empty_files_skipped"] == 1
    (tmp_path / "neg" / "1.txt").unlink()
    with pytest.raises(ValueError, match="only the class 'pos'"):
        read_folders(tmp_path)


def test_stratified_split_is_deterministic_and_stratified():
    labels = [0] * 50 + [1] * 31 + [2] * 19
    a, b = stratified_split(labels, seed=5), stratified_split(labels, seed=5)
    assert a == b and a != stratified_split(labels, seed=6)
    assert sorted(a["train"] + a["dev"] + a["test"]) == list(range(100))
    for k, n in Counter(labels).items():
        got = {s: sum(labels[i] == k for i in idx) for s, idx in a.items()}
        assert got["test"] == round(0.2 * n) and got["dev"] == round(0.1 * n)
    with pytest.raises(ValueError, match="summing to 1"):
        stratified_split(labels, (0.5, 0.5, 0.5))


def test_bbc_news_duplicates_latin1_and_split():
    docs = load_bbc()
    files = sum(1 for _ in bbc_data_dir().glob("*/*.txt"))
    assert files == 2225 and len(docs) == 2127 and docs.report["duplicates_removed"] == 98
    assert len(set(docs.texts)) == len(docs)
    assert docs.classes == ["business", "entertainment", "politics", "sports", "tech"]
    assert docs.report["latin1_files"] == ["sports/199.txt"]
    mutu = docs.texts[docs.ids.index("sports/199.txt")]
    assert mutu.startswith("Chelsea sack Mutu") and "£15.8m" in mutu
    split = stratified_split(docs.labels, seed=13)
    assert split == stratified_split(load_bbc().labels, seed=13)
    assert [len(split[s]) for s in ("train", "dev", "test")] == [1489, 212, 426]
    assert [docs.ids[i] for i in split["dev"][:2]] == ["business/009.txt", "business/041.txt"]  # pinned
    counts = Counter(docs.labels)
    for k in range(5):
        share = sum(docs.labels[i] == k for i in split["test"]) / len(split["test"])
        assert abs(share - counts[k] / len(docs)) < 0.005


def test_document_tokens_title_first_and_ptb_style():
    text = "Profits Jump 76%\n\nTimeWarner made $1.13bn, up from $639m.\nMore text here."
    tokenize = str.split
    assert document_tokens(text, tokenize, max_tokens=4) == ["Profits", "Jump", "76%", "TimeWarner"]
    assert ptb_normalise(["Profits", "76%", "$", "1,130", "--", "U.S.", "'s", "."]) == \
        ["profits", "N", "$", "N", "u.s.", "'s"]
    with pytest.raises(ValueError, match="text style"):
        document_tokens(text, tokenize, style="fancy")


def test_keep_labelled_keeps_a_nested_per_class_fraction_of_train_only():
    labels = [k % 3 for k in range(300)] + [0] * 30  # classes of 130, 100, 100 documents
    split = stratified_split(labels, (0.7, 0.1, 0.2), seed=13)
    tenth, half = (keep_labelled(split, labels, f, seed=13) for f in (0.1, 0.5))
    assert tenth["dev"] == split["dev"] and tenth["test"] == split["test"]
    for c in range(3):
        members = [i for i in split["train"] if labels[i] == c]
        assert sum(labels[i] == c for i in tenth["train"]) == round(0.1 * len(members))
    assert set(tenth["train"]) <= set(half["train"]) <= set(split["train"])  # nested
    assert keep_labelled(split, labels, 1.0) == split
    assert all(sum(labels[i] == c for i in keep_labelled(split, labels, 1e-6)["train"]) == 1 for c in range(3))
    with pytest.raises(ValueError, match=r"--train-fraction must be in \(0, 1\]"):
        keep_labelled(split, labels, 0.0)
