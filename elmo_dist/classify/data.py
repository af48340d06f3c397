"""Labelled documents for the classifier: label tables, folder-per-class inputs, the split.

Inputs (each document keeps its ``row``: the 0-based data row of a table, which is also its key
in an HDF5 layer export of that table's texts):

  * a table, ``.csv`` (comma, quotes as Excel writes them) or ``.tsv``/``.tab``/``.txt`` (tab,
    no quoting: a field holds no tab and no newline), UTF-8, a header row naming a text and a
    label column (``text`` and ``label`` unless told otherwise) and, optionally, a ``split``
    column with ``train``/``dev``/``test`` per row (``valid``/``validation`` mean dev);
  * a folder with one sub-folder per class, each file of a sub-folder one document
    (UTF-8; UTF-16/32 by byte-order mark; Latin-1 where a file is not valid UTF-8; counted in
    the report). Binary files (a NUL byte near the start: images, archives) are skipped and
    counted; a class folder left with no document is named in the report (and warned about).

Every problem with a label file is a ``ValueError`` with a one-line message that names the file,
the row where there is one, and the fix. Exact duplicate texts are kept once (the first); a
duplicate with another label counts as a conflict (also kept once, with its first label).
"""
from __future__ import annotations

import csv
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from elmo_dist.data.textio import SNIFF_BYTES, sniff_text_file, split_lines, wide_encoding

SPLITS = ("train", "dev", "test")
SPLIT_ALIASES = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev", "val": "dev", "test": "test"}
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t", ".tab": "\t", ".txt": "\t"}


@dataclass
class LabeledDocs:
    """Documents with integer labels; ``classes[label]`` is the label's name."""

    texts: list
    """Document texts (lines kept; a folder file's first line is often a title)."""
    labels: list
    """Class index of each document."""
    classes: list
    """Class names, sorted."""
    ids: list
    """A readable name per document: ``file:line`` for a table row, ``class/file`` for a folder file."""
    rows: list
    """Row of each document in its source (the HDF5 key of an export of the source's texts)."""
    splits: Optional[list] = None
    """train/dev/test per document when the source gave them, else None."""
    source: str = ""
    """Where the documents came from, for reports."""
    report: dict = field(default_factory=dict)
    """What was read, dropped and decoded how."""

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, keep: Sequence[int]) -> "LabeledDocs":
        """The documents at the indices ``keep`` (same classes)."""
        pick = lambda xs: None if xs is None else [xs[i] for i in keep]  # noqa: E731
        return LabeledDocs(pick(self.texts), pick(self.labels), list(self.classes), pick(self.ids), pick(self.rows),
                           pick(self.splits), self.source, dict(self.report))

    def class_counts(self) -> dict:
        counts = Counter(self.labels)
        return {name: counts.get(k, 0) for k, name in enumerate(self.classes)}


def package_data(package: str, relative: str, install: str) -> Path:
    """The path ``relative`` inside the installed ``package``, found without importing it (some
    data packages download or print on import); ImportError naming ``install`` when it is absent,
    FileNotFoundError when the package lacks the file."""
    import importlib.util
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        from elmo_dist.errors import MissingPackage
        raise MissingPackage(f"this data set needs the PyPI package {package}: {install}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing from {package}; reinstall it ({install})")
    return path


def decode_text(data: bytes) -> tuple[str, str]:
    """bytes -> (text, encoding): UTF-16/32 when a byte-order mark says so, UTF-8 (a BOM is
    dropped), else Latin-1 (which decodes any byte)."""
    wide = wide_encoding(data)
    if wide is not None:
        return data.decode(wide[:6].lower()), "utf-16/32"
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def _build(texts, names, ids, rows, splits, source: str, report: dict) -> LabeledDocs:
    """Drops exact duplicate texts, checks there are two classes or more, indexes the labels."""
    seen: dict[str, str] = {}
    keep, conflicts = [], 0
    for i, text in enumerate(texts):
        if text in seen:
            conflicts += seen[text] != names[i]
            continue
        seen[text] = names[i]
        keep.append(i)
    classes = sorted(set(names[i] for i in keep))
    if len(classes) < 2:
        found = f"only the class {classes[0]!r}" if classes else "no documents"
        raise ValueError(f"{source}: {found}; a classifier needs documents of at least two classes")
    index = {c: k for k, c in enumerate(classes)}
    report = {**report, "documents": len(keep), "duplicates_removed": len(texts) - len(keep),
              "duplicates_with_other_label": conflicts}
    pick = lambda xs: None if xs is None else [xs[i] for i in keep]  # noqa: E731
    return LabeledDocs(pick(texts), [index[names[i]] for i in keep], classes, pick(ids), pick(rows), pick(splits),
                       source, report)


def read_labels(path: Path | str, text_column: str = "text", label_column: str = "label") -> LabeledDocs:
    """A label table, or a folder with one sub-folder per class."""
    path = Path(path)
    if path.is_dir():
        return read_folders(path)
    return read_table(path, text_column, label_column)


def read_table(path: Path | str, text_column: str = "text", label_column: str = "label",
               split_column: str = "split") -> LabeledDocs:
    """A CSV/TSV label table (see the module docstring) -> LabeledDocs."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: label file not found")
    if not path.is_file():
        raise ValueError(f"{path}: not a regular file; give a .csv/.tsv label table or a folder per class")
    delimiter = TABLE_SUFFIXES.get(path.suffix.lower())
    if delimiter is None:
        raise ValueError(f"{path}: unknown label file type {path.suffix!r}; name it .csv (comma) or .tsv (tab), "
                         f"or give a folder with one sub-folder per class")
    sniff_text_file(path)  # UTF-16/32: refused with the iconv command
    data = path.read_bytes()
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValueError(f"{path}: not valid UTF-8 (byte 0x{data[e.start]:02x} on line {line}); "
                         f"re-save it as UTF-8") from None
    if not content.strip():
        raise ValueError(f"{path}: empty; expected a header row ({text_column}{_sep(delimiter)}{label_column}) "
                         f"and one row per document")
    header, lines = _parse_rows(path, content, delimiter)
    missing = [c for c in (text_column, label_column) if c not in header]
    if missing:
        hint = ""
        if len(header) == 1 and delimiter == "\t" and "," in header[0]:
            hint = "; the header has commas but no tabs: name the file .csv"
        elif len(header) == 1 and delimiter == "," and "\t" in header[0]:
            hint = "; the header has tabs but no commas: name the file .tsv"
        raise ValueError(f"{path}: no {' or '.join(repr(c) for c in missing)} column in the header "
                         f"(found {header}); the first row must name the columns, e.g. "
                         f"{text_column}{_sep(delimiter)}{label_column}{hint}")
    ti, li = header.index(text_column), header.index(label_column)
    si = header.index(split_column) if split_column in header else None
    texts, names, ids, rows, splits = [], [], [], [], []
    data_row = 0
    for line_no, fields in enumerate(lines, start=2):
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # blank line
        if len(fields) != len(header):
            raise ValueError(f"{path} line {line_no}: {len(fields)} fields, the header has {len(header)}"
                             + (" (a tab inside a text? TSV fields cannot hold tabs)" if delimiter == "\t" else
                                " (an unquoted comma inside a text? quote the field)"))
        text, label = fields[ti].strip(), fields[li].strip()
        if not label:
            raise ValueError(f"{path} line {line_no}: empty label; every row needs one")
        if not text:
            raise ValueError(f"{path} line {line_no}: empty text; drop the row or give it a text")
        if si is not None:
            value = fields[si].strip().lower()
            if value not in SPLIT_ALIASES:
                raise ValueError(f"{path} line {line_no}: split {fields[si]!r} is not train, dev or test")
            splits.append(SPLIT_ALIASES[value])
        texts.append(text)
        names.append(label)
        ids.append(f"{path.name}:{line_no}")
        rows.append(data_row)
        data_row += 1
    if not texts:
        raise ValueError(f"{path}: a header but no data rows")
    docs = _build(texts, names, ids, rows, splits if si is not None else None, str(path),
                  {"rows": len(texts)})
    if docs.splits is not None:
        present = set(docs.splits)
        absent = [s for s in SPLITS if s not in present]
        if absent:
            raise ValueError(f"{path}: the {split_column!r} column has no {'/'.join(absent)} rows; give all of "
                             f"train, dev and test, or drop the column for a seeded stratified split")
    return docs


def _parse_rows(path: Path, content: str, delimiter: str) -> tuple[list, list]:
    """(header, data rows) of a table's text. Rows end at "\n" only (``data.textio``), so a lone
    "\r" inside a TSV cell is whitespace of that text, as the corpus and export readers see it;
    TSV is split at tabs (no quoting), CSV parsed with Excel's quoting."""
    if delimiter == "\t":
        rows = [line.split("\t") for line in split_lines(content)]
        return [h.strip() for h in rows[0]], rows[1:]
    reader = csv.reader(split_lines(content), delimiter=delimiter, quoting=csv.QUOTE_MINIMAL, strict=True)
    try:
        header = [h.strip() for h in next(reader)]
        return header, list(reader)
    except csv.Error as e:
        raise ValueError(f"{path} line {reader.line_num}: malformed CSV ({e}); quote fields that hold commas, "
                         f"quotes, newlines or carriage returns") from None


def _sep(delimiter: str) -> str:
    return "<TAB>" if delimiter == "\t" else delimiter


def read_folders(root: Path | str) -> LabeledDocs:
    """ROOT/<class>/<file>: one document per file (hidden files skipped)."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder (give a folder with one sub-folder per class)")
    texts, names, ids, encodings, empty_classes = [], [], [], Counter(), []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        before = len(texts)
        for file in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
            data = file.read_bytes()
            if wide_encoding(data) is None and b"\x00" in data[:SNIFF_BYTES]:
                encodings["binary"] += 1  # an image, an archive: not a document
                continue
            text, encoding = decode_text(data)
            if not text.strip():
                encodings["empty"] += 1
                continue
            encodings[encoding] += 1
            texts.append(text.strip())
            names.append(folder.name)
            ids.append(f"{folder.name}/{file.name}")
        if len(texts) == before:
            empty_classes.append(folder.name)
    if not texts:
        raise ValueError(f"{root}: no documents; expected one sub-folder per class, each holding text files")
    return _build(texts, names, ids, list(range(len(texts))), None, str(root),
                  {"files": len(texts) + encodings["empty"] + encodings["binary"],
                   "empty_files_skipped": encodings["empty"], "binary_files_skipped": encodings["binary"],
                   "latin1_files": encodings["latin-1"], "utf16_32_files": encodings["utf-16/32"],
                   "empty_class_folders": empty_classes})


def stratified_split(labels: Sequence[int], fractions: Sequence[float] = (0.7, 0.1, 0.2),
                     seed: int = 13) -> dict:
    """Indices per split, each class divided in the given proportions (dev and test rounded, the
    rest to train), shuffled by ``random.Random(seed)``: the same split on every machine and
    Python version for the same labels and seed. Returns {"train": [...], "dev": [...], "test": [...]}
    with sorted indices."""
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"split fractions must be three non-negative numbers summing to 1; got {list(fractions)}")
    rng = random.Random(seed)
    out = {s: [] for s in SPLITS}
    for label in sorted(set(labels)):
        members = [i for i, y in enumerate(labels) if y == label]
        rng.shuffle(members)
        n = len(members)
        n_test = round(n * fractions[2])
        n_dev = min(round(n * fractions[1]), n - n_test)
        out["test"] += members[:n_test]
        out["dev"] += members[n_test:n_test + n_dev]
        out["train"] += members[n_test + n_dev:]
    for s in SPLITS:
        out[s].sort()
    empty = [s for s in SPLITS if not out[s]]
    if empty:
        raise ValueError(f"the {'/'.join(empty)} split is empty with {len(labels)} documents and fractions "
                         f"{list(fractions)}; give more documents or larger fractions")
    return out


def keep_labelled(split: dict, labels: Sequence[int], fraction: float, seed: int = 13) -> dict:
    """``split`` with only ``fraction`` of each class's training documents (at least one), for a
    label-scarce run: dev and test are unchanged and the other training documents are left out of
    everything (classifiers, TF-IDF, whitening statistics). Each class's documents are shuffled by
    ``random.Random(seed)`` once and the first ones kept, so a smaller fraction keeps a subset of
    a larger one's documents."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"--train-fraction must be in (0, 1]; got {fraction}")
    if fraction == 1.0:
        return split
    rng = random.Random(seed)
    kept = []
    for label in sorted({labels[i] for i in split["train"]}):
        members = [i for i in split["train"] if labels[i] == label]
        rng.shuffle(members)
        kept += members[:max(1, round(fraction * len(members)))]
    return {**split, "train": sorted(kept)}


def make_split(docs: LabeledDocs, fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 13) -> dict:
    """The source's own split when it gave one, else :func:`stratified_split`."""
    if docs.splits is not None:
        return {s: [i for i, v in enumerate(docs.splits) if v == s] for s in SPLITS}
    return stratified_split(docs.labels, fractions, seed)
