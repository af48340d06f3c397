"""Every subcommand against a table of bad inputs: a one-line error that names the path or flag
(exit 2), or the documented handling (exit 0); and every input file byte-identical afterwards.

The inputs live in one module-wide folder (a micro run directory, corpora, label tables); each
row's checksums of every file in it are compared before and after (and a damaged file put back). Rows that need a full or
read-only disk mount a small tmpfs (root only; skipped elsewhere, with the reason).
"""
import contextlib
import hashlib
import json
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import h5py
import pytest
import torch

from elmo_dist.cli import main as cli
from elmo_dist.data import Corpus
from elmo_dist.train import pretrain
from tests.corpus import micro_run_config, write_corpus
from tests.unit.test_classify_cli import labelled_rows, write_layers, write_tsv

pytestmark = pytest.mark.timeout(300)

CLASSIFY_FAST = ["--encoder", "mean", "--hidden", "8", "--epochs", "2", "--patience", "1", "--batch-size", "16",
                 "--mode", "scalar-mix", "--seeds", "0", "--tokenizer", "whitespace", "--wandb-mode", "disabled",
                 "--no-progress", "--threads", "1"]
TINY_RUN = ["--preset", "tiny", "--batch-size", "4", "--num-steps", "6", "--wandb", "disabled", "--no-progress",
            "--threads", "1", "--eval-every", "0"]


def _write_class_folders(root: Path) -> None:
    """ROOT/ant, bee, cat: text documents; ROOT/dog: empty; ROOT/cat/photo.jpg: binary."""
    for i, (text, label) in enumerate(labelled_rows(45)):
        folder = root / label
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03d}.txt").write_text(text + "\n", encoding="utf-8")
    (root / "dog").mkdir()
    (root / "cat" / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)) * 4)


def _folder_layers(root: Path, path: Path) -> Path:
    """Layers for the text documents of ROOT in reading order (class folders, then files, sorted)."""
    rows = [(f.read_text(encoding="utf-8").strip(), f.parent.name)
            for f in sorted(root.glob("*/*.txt"), key=lambda f: (f.parent.name, f.name))]
    return write_layers(path, rows)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The inputs every row reads: corpora, a trained micro run, sentences, label tables."""
    w = tmp_path_factory.mktemp("inputs")
    write_corpus(w / "train.txt", 300)
    write_corpus(w / "valid.txt", 40, seed=1)
    torch.manual_seed(0)
    pretrain(micro_run_config(w / "train.txt", w / "valid.txt", max_steps=2, checkpoint_every=2), w / "R",
             progress=False)
    (w / "s.txt").write_text("the cat sat on a mat\na river runs by the house\n", encoding="utf-8")
    (w / "cr.txt").write_bytes(b"the cat\rsat on a mat\na river runs\r\n")
    (w / "u16.txt").write_bytes("the cat sat\n".encode("utf-16") * 50)
    (w / "u32.txt").write_bytes("the cat sat\n".encode("utf-32") * 50)
    (w / "empty.txt").write_bytes(b"")
    long_line = " ".join(["x"] * 1500)  # 2,999 bytes: over --max-line-bytes 1000
    (w / "long.txt").write_text(long_line + "\n" + (w / "valid.txt").read_text(encoding="utf-8")[:600],
                                encoding="utf-8")
    (w / "texts").mkdir()
    write_corpus(w / "texts" / "a.txt", 100)
    (w / "texts" / "b.bin").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)) * 8)
    os.mkfifo(w / "fifo")
    rows = labelled_rows(60)
    write_tsv(w / "l.tsv", rows)
    write_layers(w / "l.hdf5", rows)
    write_layers(w / "shifted.hdf5", rows[5:] + rows[:5])  # the layers of other rows
    (w / "cr.tsv").write_bytes(b"text\tlabel\n" + b"".join(
        (t.replace(" ", "\r", 1) if i % 7 == 0 else t).encode() + b"\t" + y.encode() + b"\n"
        for i, (t, y) in enumerate(rows)))
    _write_class_folders(w / "classes")
    _folder_layers(w / "classes", w / "classes.hdf5")
    os.link(w / "train.txt", w / "train-link.txt")
    return w


def snapshot(root: Path) -> dict:
    """The bytes of every regular file below ``root`` (FIFOs and folders skipped), by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def changed_inputs(root: Path, before: dict) -> list:
    """Files of ``before`` whose sha256 differs now (or that are gone); each is put back as it
    was, so that one row's damage cannot fail the rows after it."""
    digest = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731
    changed = []
    for rel, data in before.items():
        path = root / rel
        if not path.is_file() or digest(path.read_bytes()) != digest(data):
            changed.append(rel)
            if path.is_dir():
                import shutil
                shutil.rmtree(path)
            path.write_bytes(data)
    return changed


@contextlib.contextmanager
def tmpfs(size: str, read_only: bool = False):
    """A fresh tmpfs of ``size`` (mounted read-only if asked); skips the test without root."""
    where = Path(tempfile.mkdtemp(prefix="elmo-tmpfs-"))
    opts = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(where)], capture_output=True)
    if mounted.returncode != 0:
        where.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip() or 'not root'})")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)
        where.rmdir()


@dataclass
class Row:
    """One bad input: the command (paths relative to the inputs folder; ``{fs}`` is a tmpfs when
    ``fs`` is set) and what must appear in its one-line error."""

    name: str
    argv: list
    names: list
    """Substrings of the error line: the offending path and/or flag, and the hint."""
    fs: Optional[dict] = None
    """tmpfs(**fs) for the run directory."""
    check: Optional[Callable] = None
    """check(world, fs_root): what else must hold afterwards."""
    gpu_ok: bool = False
    """The row is not an error on a machine with CUDA (skipped there)."""


def _last_good_checkpoint_kept(w, fs):
    from elmo_dist.train.checkpoint import latest_valid
    found = latest_valid(w / "out" / "diverged")
    assert found is not None and found[0].name == "step-00000001"
    assert all(torch.isfinite(t).all() for t in found[1]["model"].values())


def _no_run_files_written(w, fs):
    assert not (w / "out" / "cut" / "config.json").exists()  # so the same command can run again, fixed


def _nothing_half_written(w, fs):
    root = fs / "R" / "checkpoints"
    assert root.is_dir() and not any(root.iterdir()), list(root.iterdir())  # no .tmp-step-* left behind


REFUSED = [
    Row("vocab-out-is-corpus", ["vocab", "train.txt", "--out", "train.txt"], ["--out train.txt", "destroy the input"]),
    Row("vocab-out-is-hard-link", ["vocab", "train.txt", "--out", "train-link.txt"], ["--out train-link.txt"]),
    Row("export-output-is-input", ["export", "s.txt", "s.txt", "--run-dir", "R"], ["OUTPUT s.txt", "input file"]),
    Row("export-report-is-input", ["export", "s.txt", "out/o.h5", "--run-dir", "R", "--report", "s.txt"],
        ["--report s.txt"]),
    Row("export-output-is-run-file", ["export", "s.txt", "R/vocab.txt", "--run-dir", "R"], ["OUTPUT R/vocab.txt"]),
    Row("evaluate-out-is-corpus", ["evaluate", "R", "--corpus", "valid.txt", "--out", "valid.txt"],
        ["--out valid.txt"]),
    Row("evaluate-out-is-run-config", ["evaluate", "R", "--corpus", "valid.txt", "--out", "R/config.json"],
        ["--out R/config.json"]),
    Row("export-output-is-folder", ["export", "s.txt", "texts", "--run-dir", "R"], ["OUTPUT texts is a folder"]),
    Row("export-cuda-on-cpu", ["export", "s.txt", "out/c.h5", "--run-dir", "R", "--device", "cuda"],
        ["--device cuda", "--device cpu"], gpu_ok=True),
    Row("vocab-utf16", ["vocab", "u16.txt", "--out", "out/v.txt"], ["u16.txt", "UTF-16LE", "iconv -f UTF-16"]),
    Row("vocab-utf32", ["vocab", "u32.txt", "--out", "out/v.txt"], ["u32.txt", "UTF-32LE", "iconv -f UTF-32"]),
    Row("export-utf16-input", ["export", "u16.txt", "out/u.h5", "--run-dir", "R"], ["u16.txt", "iconv"]),
    Row("classify-utf16-table", ["classify", "--labels", "u16.txt", "--layers", "l.hdf5", "--out", "out/c16"],
        ["u16.txt", "iconv"]),
    Row("vocab-fifo", ["vocab", "fifo", "--out", "out/v.txt"], ["fifo", "FIFO"]),
    Row("vocab-dev-zero", ["vocab", "/dev/zero", "--out", "out/v.txt"], ["/dev/zero", "character device"]),
    Row("export-fifo-input", ["export", "fifo", "out/f.h5", "--run-dir", "R"], ["fifo", "not a regular file"]),
    Row("evaluate-empty-corpus", ["evaluate", "R", "--corpus", "empty.txt"], ["empty.txt", "nothing to evaluate"]),
    Row("pretrain-long-line-owns-a-row", ["pretrain", "--run-dir", "out/long", "--corpus", "long.txt",
                                          "--max-line-bytes", "1000", "--max-steps", "2", *TINY_RUN],
        ["long.txt", "--max-line-bytes (1000)", "--batch-size"]),
    Row("pretrain-cutoffs-beyond-vocab", ["pretrain", "--run-dir", "out/cut", "--corpus", "train.txt", "--softmax",
                                          "adaptive", "--cutoffs", "20000", "100000", "--max-steps", "2", *TINY_RUN],
        ["[20000, 100000]", "--cutoffs", "below"], check=_no_run_files_written),
    Row("pretrain-lr-diverges", ["pretrain", "--run-dir", "out/diverged", "--corpus", "train.txt", "--lr", "1e30",
                                 "--max-steps", "20", "--checkpoint-every", "1", *TINY_RUN],
        ["diverged", "step 2", "last good checkpoint is step 1", "--lr"], check=_last_good_checkpoint_kept),
    Row("pretrain-run-dir-is-a-file", ["pretrain", "--run-dir", "s.txt", "--corpus", "train.txt", *TINY_RUN],
        ["--run-dir s.txt"]),
    Row("pretrain-run-dir-inside-corpus-folder", ["pretrain", "--run-dir", "texts/run", "--corpus", "texts",
                                                  *TINY_RUN], ["--run-dir texts/run", "corpus folder"]),
    Row("pretrain-disk-full", ["pretrain", "--run-dir", "{fs}/R", "--corpus", "train.txt", "--max-steps", "4",
                               "--checkpoint-every", "2", *TINY_RUN],
        ["cannot write {fs}/R/checkpoints/step-00000002", "no space left", "no checkpoint was written yet"],
        fs={"size": "3m"}, check=_nothing_half_written),
    Row("pretrain-read-only-run-dir", ["pretrain", "--run-dir", "{fs}/R", "--corpus", "train.txt", *TINY_RUN],
        ["--run-dir {fs}/R", "read-only"], fs={"size": "1m", "read_only": True}),
    Row("export-to-read-only-disk", ["export", "s.txt", "{fs}/o.h5", "--run-dir", "R"], ["{fs}", "read-only"],
        fs={"size": "1m", "read_only": True}),
    Row("classify-layers-of-other-rows", ["classify", "--labels", "l.tsv", "--layers", "shifted.hdf5", "--out",
                                          "out/shifted", *CLASSIFY_FAST], ["--layers shifted.hdf5", "rows differ"]),
    Row("classify-no-training-fraction", ["classify", "--labels", "l.tsv", "--layers", "l.hdf5", "--out", "out/tf0",
                                          "--train-fraction", "0", *CLASSIFY_FAST], ["--train-fraction", "(0, 1]"]),
    Row("classify-out-is-a-file", ["classify", "--labels", "l.tsv", "--layers", "l.hdf5", "--out", "s.txt",
                                   *CLASSIFY_FAST], ["--out s.txt is a file"]),
    Row("convert-to-allennlp-into-run-dir", ["convert", "R", "--to-allennlp", "R"], ["--to-allennlp R"]),
    Row("convert-to-allennlp-onto-a-file", ["convert", "R", "--to-allennlp", "s.txt"], ["--to-allennlp s.txt"]),
    Row("demo-run-dir-holds-a-run", ["demo", "--run-dir", "R", "--no-progress"], ["--run-dir R", "already holds"]),
    Row("demo-few-labels-out-of-range", ["demo", "--run-dir", "out/d", "--few-labels", "1.5", "--no-progress"],
        ["--few-labels", "[0, 1)"]),
    Row("demo-run-dir-is-a-file", ["demo", "--run-dir", "s.txt", "--no-progress"], ["--run-dir s.txt is a file"]),
    Row("bench-unknown-suite", ["bench", "--suite", "nosuch"], ["--suite", "nosuch"]),
]


def _run_row(w: Path, row: Row, capfd):
    """Runs ``row`` from the inputs folder; returns (exit code, stdout, stderr, fs root)."""
    stack = contextlib.ExitStack()
    fs = stack.enter_context(tmpfs(**row.fs)) if row.fs else None
    with stack:
        argv = [a.replace("{fs}", str(fs)) for a in row.argv]
        before = snapshot(w)
        cwd = os.getcwd()
        os.chdir(w)
        try:
            try:
                code = cli(argv)
            except SystemExit as e:  # argparse rejects a flag with exit 2
                code = e.code
        finally:
            os.chdir(cwd)
        out, err = capfd.readouterr()
        changed = changed_inputs(w, before)
        assert not changed, f"{row.name}: inputs changed: {changed}"
        if row.check is not None:
            row.check(w, fs)
        return code, out, err.replace(str(fs), "{fs}") if fs else err, fs


@pytest.mark.parametrize("row", REFUSED, ids=[r.name for r in REFUSED])
def test_bad_input_is_refused_in_one_line(world, row, capfd):
    if row.gpu_ok and torch.cuda.is_available():
        pytest.skip("CUDA is present: --device cuda is not an error here")
    code, out, err, _ = _run_row(world, row, capfd)
    errors = [line for line in err.replace("\r", "\n").splitlines() if ": error:" in line]  # \r: a progress bar
    assert code == 2, (code, err[-2000:])
    assert "Traceback" not in err and len(errors) == 1, err[-3000:]
    assert errors[0].startswith(f"elmo-dist {row.argv[0]}: error: "), errors
    for needle in row.names:
        assert needle in errors[0], (needle, errors[0])


def test_lone_carriage_return_counted_alike_by_every_reader(world, capfd):
    """A lone \\r stays inside its line: export's keys, the corpus reader and vocab agree on 2 lines."""
    code, out, err, _ = _run_row(world, Row("", ["export", "cr.txt", "out/cr.h5", "--run-dir", "R"], []), capfd)
    assert code == 0, err
    with h5py.File(world / "out" / "cr.h5", "r") as f:
        assert sorted(k for k in f if k != "sentence_to_index") == ["0", "1"]
        assert f["0"].shape[1] == 6 and f["1"].shape[1] == 3  # "the cat\rsat on a mat", "a river runs"
        index = json.loads(f["sentence_to_index"][0])
    assert index == {"the cat\rsat on a mat": "0", "a river runs": "1"}
    assert [len(t) for t in Corpus([world / "cr.txt"]).iter_sentences()] == [6, 3]


def test_carriage_return_inside_a_tsv_cell_is_whitespace(world, capfd):
    row = Row("", ["classify", "--labels", "cr.tsv", "--layers", "l.hdf5", "--out", "out/cr", *CLASSIFY_FAST], [])
    code, out, err, _ = _run_row(world, row, capfd)
    assert code == 0, err[-2000:]
    results = json.loads((world / "out" / "cr" / "results.json").read_text())
    assert results["dataset"]["read"]["rows"] == 60
    layers = results["dataset"]["layers"]
    assert (layers["rows_checked"], layers["rows_differing"]) == (60, 0)


def test_class_folders_empty_and_binary_files(world, capfd):
    row = Row("", ["classify", "--labels", "classes", "--layers", "classes.hdf5", "--out", "out/folders",
                   *CLASSIFY_FAST], [])
    code, out, err, _ = _run_row(world, row, capfd)
    assert code == 0, err[-2000:]
    assert f"warning: class folder {Path('classes') / 'dog'} holds no text document" in out + err
    read = json.loads((world / "out" / "folders" / "results.json").read_text())["dataset"]["read"]
    assert read["binary_files_skipped"] == 1 and read["documents"] == 45 and read["files"] == 46
    assert read["empty_class_folders"] == ["dog"]


def test_binary_file_in_a_corpus_folder_is_left_out_and_counted(world, capfd):
    code, out, err, _ = _run_row(world, Row("", ["vocab", "texts", "--out", "out/texts-vocab.txt",
                                                 "--no-progress"], []), capfd)
    assert code == 0, err
    assert "1 binary file left out" in out
    words = (world / "out" / "texts-vocab.txt").read_text(encoding="utf-8").split("\n")
    assert not any("\x00" in word or "ELF" in word for word in words)
    expected = {w for line in (world / "texts" / "a.txt").read_text().splitlines() for w in line.split()}
    assert set(words[3:-1]) == expected


def test_a_bug_keeps_its_traceback(capsys):
    """Only user errors become one line: an unexpected RuntimeError or ImportError is a bug, and
    its traceback is what a bug report needs."""
    from elmo_dist.cli.common import run_guarded
    from elmo_dist.errors import MissingPackage

    def bug():
        raise RuntimeError("internal invariant broken")

    with pytest.raises(RuntimeError, match="internal invariant"):
        run_guarded("elmo-dist x", bug)

    def missing():
        raise MissingPackage("the nltk tokenizer needs nltk: pip install 'nltk>=3.8'")

    assert run_guarded("elmo-dist x", missing) == 2
    assert capsys.readouterr().err.strip() == "elmo-dist x: error: the nltk tokenizer needs nltk: pip install 'nltk>=3.8'"
