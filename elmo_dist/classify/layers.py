"""ELMo layers of the documents: read from an HDF5 export, or exported on the fly and cached.

An HDF5 input follows ``elmo-dist export --all``: dataset ``str(row)`` is (L+1, T, D) for row
``row`` of the label table. On the fly, the documents' tokens are written one document per
line to ``OUT/cache/docs-<hash>.txt`` and exported with the biLM (stateless: a document's
vectors depend on that document only) to ``OUT/cache/layers-<key>.hdf5``, where the key hashes
the tokens and the model's files (checkpoint names and times, or the AllenNLP files' sizes and
times): a re-run with the same documents and model reads the cache instead of running the biLM.
In memory the layers are float16 (half the memory; the classifier computes in float32).

The random-init control (``--baselines``) exports the same documents with the same biLM
configuration, untrained: the weights ``elmo_dist.runs.untrained_bilm`` gives (what
``elmo-dist pretrain`` starts from), with the run's seed, or ``ALLENNLP_INIT_SEED`` for
AllenNLP files. Its cache files are ``OUT/cache/random-init-<key>.hdf5``, keyed by
``random_init_fingerprint`` (the model configuration and the seed), so both exports are kept.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

import torch

CACHE_VERSION = 1


class Layers(NamedTuple):
    """Per-document layer tensors and their sizes."""

    docs: list
    """(L+1, T_i, D) float16 per document, T_i >= 1."""
    n_layers: int
    """L+1: the token layer and every LSTM layer."""
    dim: int
    """D = 2P."""


def read_hdf5_layers(path: Path | str, rows: Sequence[int], max_tokens: Optional[int] = None) -> list:
    """The datasets ``str(row)`` of an ``--all`` export, cut to ``max_tokens``: a list of float16
    (L+1, T, D) tensors, ``None`` where a document has no tokens."""
    import h5py
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: HDF5 layer file not found")
    out = []
    with h5py.File(path, "r") as f:
        n = sum(1 for k in f.keys() if k.isdigit())
        need = max(rows) + 1 if len(rows) else 0
        if n < need:
            raise ValueError(f"{path}: {n} line datasets, but the labels have {need} rows; export the same texts, "
                             f"one per line, in the same order (elmo-dist export TEXTS {path.name} --all)")
        for row in rows:
            ds = f[str(row)]
            if ds.ndim != 3:
                raise ValueError(f"{path}: dataset {row!r} has shape {ds.shape}; the classifier needs every layer, "
                                 f"(L+1, T, D): export with --all")
            T = ds.shape[1] if max_tokens is None else min(ds.shape[1], max_tokens)
            out.append(torch.from_numpy(ds[:, :T]).to(torch.float16) if T > 0 else None)
    return out


def export_alignment(path: Path | str, texts: Sequence[str], rows: Sequence[int]) -> tuple[int, int]:
    """(rows checked, rows whose text differs) against the export's ``sentence_to_index``."""
    import h5py
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: HDF5 layer file not found")
    with h5py.File(path, "r") as f:
        if "sentence_to_index" not in f:
            return 0, 0
        raw = f["sentence_to_index"][0]
    index = json.loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    by_key = {v: k for k, v in index.items()}
    checked = differ = 0
    for text, row in zip(texts, rows):
        sentence = by_key.get(str(row))
        if sentence is None:
            continue
        checked += 1
        differ += " ".join(text.split()) != " ".join(sentence.split())
    return checked, differ


def model_fingerprint(run_dir: Optional[Path] = None, checkpoint: Optional[Path] = None,
                      options: Optional[Path] = None, weights: Optional[Path] = None) -> dict:
    """What identifies the model's weights, without loading them: file names, sizes and times."""
    def stat(p: Path) -> list:
        p = Path(p).resolve()
        if not p.exists():
            raise FileNotFoundError(f"{p}: not found")
        s = p.stat()
        return [str(p), s.st_size, s.st_mtime_ns]

    if run_dir is not None:
        from elmo_dist.runs import checkpoint_paths
        chosen = [checkpoint] if checkpoint is not None else checkpoint_paths(run_dir)
        if not chosen:
            raise FileNotFoundError(f"{run_dir}: no checkpoints; train first with "
                                    f"`elmo-dist pretrain --run-dir {run_dir}`")
        return {"run_dir": str(Path(run_dir).resolve()), "checkpoints": [stat(p) for p in chosen]}
    return {"options": stat(options), "weights": stat(weights)}


ALLENNLP_INIT_SEED = 1234
"""Seed of the random-init control for --options/--weights (they record no seed): TrainConfig's
default seed, i.e. what `elmo-dist pretrain` of that configuration would start from."""


def random_init_source(run_dir: Optional[Path] = None, options: Optional[Path] = None):
    """(ModelConfig, seed) of the control: a run's config.json model and train.seed, or the
    options.json model with ``ALLENNLP_INIT_SEED``."""
    if run_dir is not None:
        from elmo_dist.runs import run_model_config
        return run_model_config(run_dir)
    if options is None:
        raise ValueError("random-init control: needs a run directory or an options.json")
    from elmo_dist.model.allennlp_format import read_options
    return read_options(options), ALLENNLP_INIT_SEED


def random_init_fingerprint(model_config, seed: int) -> dict:
    """The cache identity of an untrained biLM: its configuration and its initialisation seed."""
    return {"random_init": model_config.to_dict(), "seed": int(seed)}


def load_random_init(model_config, seed: int, device: Optional[str] = None):
    """The untrained biLM ``init_model(model_config, seed)``, stateless, in eval mode, on
    ``device``; the caller's global RNG state is left as it was."""
    from elmo_dist.runs import untrained_bilm
    return untrained_bilm(model_config, seed, device)


def load_bilm(run_dir: Optional[Path] = None, checkpoint: Optional[Path] = None, options: Optional[Path] = None,
              weights: Optional[Path] = None, device: Optional[str] = None):
    """A stateless biLM in eval mode from a run directory or bilm-tf/AllenNLP files."""
    from elmo_dist import runs
    return runs.load_bilm(run_dir, checkpoint, options, weights, device, stateful=False)


def cached_export(tokens: Sequence[Sequence[str]], cache_dir: Path, fingerprint: dict, load_model,
                  batch_size: int = 64, progress: bool = True, name: str = "layers") -> tuple[Path, bool]:
    """The HDF5 export ``cache_dir/<name>-<key>.hdf5`` of ``tokens`` (one document per line) by
    the model ``fingerprint`` names: (path, True) when it was already there; otherwise
    ``load_model()`` is called, the export written (older ``<name>-*`` exports and other
    documents' token files removed) and (path, False) returned."""
    from elmo_dist.export import Embedder, export_sentences
    from elmo_dist.utils import atomic_write_text

    text = "".join(" ".join(t) + "\n" for t in tokens)
    docs_hash = hashlib.sha256(text.encode("utf-8")).hexdigest()
    key = hashlib.sha256(json.dumps({"v": CACHE_VERSION, "docs": docs_hash, "model": fingerprint},
                                    sort_keys=True).encode()).hexdigest()[:16]
    cache_dir = Path(cache_dir)
    out = cache_dir / f"{name}-{key}.hdf5"
    if out.is_file():
        return out, True
    cache_dir.mkdir(parents=True, exist_ok=True)
    docs_file = cache_dir / f"docs-{docs_hash[:16]}.txt"
    for old in list(cache_dir.glob(f"{name}-*")) + list(cache_dir.glob("docs-*.txt")):
        if old != docs_file:
            old.unlink()
    atomic_write_text(docs_file, text)
    embedder = Embedder(load_model())
    longest = max((len(t) for t in tokens), default=1)
    export_sentences(embedder, docs_file, out, mode="all", batch_size=batch_size, max_tokens=max(longest, 1),
                     progress=progress)
    atomic_write_text(cache_dir / f"{name}-{key}.json",
                      json.dumps({"docs": docs_file.name, "model": fingerprint}, indent=2, sort_keys=True) + "\n")
    return out, False


def stack_layers(docs: Sequence[Optional[torch.Tensor]]) -> Layers:
    """Checks the per-document tensors agree in (L+1, D); None entries are not allowed here."""
    first = docs[0]
    for i, d in enumerate(docs):
        if d.shape[0] != first.shape[0] or d.shape[2] != first.shape[2]:
            raise ValueError(f"document {i}: layers {tuple(d.shape)} differ from the first document's "
                             f"{tuple(first.shape)}; were they exported by one model?")
    return Layers(list(docs), first.shape[0], first.shape[2])
