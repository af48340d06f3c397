"""AllenNLP 2.10.1's own ELMo code, loaded from its wheel, for side-by-side benchmarks.

AllenNLP 2.10.1 (its last release) requires torch < 1.13 and cannot be installed next to this
project's torch. Its ELMo inference path, though, only computes with torch, numpy and h5py:
modules/elmo.py (``_ElmoBiLm``, ``_ElmoCharacterEncoder``), elmo_lstm.py,
lstm_cell_with_projection.py, encoder_base.py, highway.py, nn/util.py, nn/initializers.py and
the ``ELMoCharacterMapper`` of data/token_indexers/elmo_indexer.py. What else those files import
is framework plumbing (configuration classes, a file-download cache, the dataset pipeline).

``load(wheel)`` reads those files from the wheel and runs them unchanged, as modules of a
package ``allennlp`` whose plumbing modules are small stand-ins defined here (no AllenNLP code
is copied into this repository); only ``elmo.batch_to_ids``, which goes through the dataset
pipeline, is replaced by ``elmo_dist.batch_to_ids`` (same ids). Nothing is installed.

    pip download allennlp==2.10.1 --no-deps -d /tmp/allennlp
    python benchmarks/bench_embed.py --allennlp-wheel /tmp/allennlp/allennlp-2.10.1-py3-none-any.whl
"""
from __future__ import annotations

import itertools
import sys
import types
import zipfile
from pathlib import Path

# Files executed from the wheel, in import order.
REAL_MODULES = ["allennlp.nn.util", "allennlp.nn.initializers", "allennlp.data.token_indexers.elmo_indexer",
                "allennlp.modules.highway", "allennlp.modules.scalar_mix", "allennlp.modules.encoder_base",
                "allennlp.modules.lstm_cell_with_projection", "allennlp.modules.elmo_lstm", "allennlp.modules.elmo"]
PACKAGES = ["allennlp", "allennlp.common", "allennlp.data", "allennlp.data.tokenizers",
            "allennlp.data.token_indexers", "allennlp.modules", "allennlp.nn"]


class _Registrable:
    """Stand-in for allennlp.common.Registrable: ``register(name)`` is a no-op decorator."""

    @classmethod
    def register(cls, *args, **kwargs):
        return lambda subclass: subclass


class _ConfigurationError(Exception):
    pass


class _TokenIndexer(_Registrable):
    def __init__(self, token_min_padding_length: int = 0) -> None:
        self._token_min_padding_length = token_min_padding_length


def _lazy_groups_of(iterable, group_size):
    iterator = iter(iterable)
    while True:
        group = list(itertools.islice(iterator, group_size))
        if not group:
            return
        yield group


def _pad_sequence_to_length(sequence, desired_length, default_value=lambda: 0, padding_on_right=True):
    sequence = list(sequence)[:desired_length] if padding_on_right else list(sequence)[-desired_length:]
    padding = [default_value() for _ in range(desired_length - len(sequence))]
    return sequence + padding if padding_on_right else padding + sequence


def _int_to_device(device):
    import torch
    if isinstance(device, torch.device):
        return device
    return torch.device("cpu") if device < 0 else torch.device("cuda", device)


def _embedding_class():
    """Stand-in for allennlp.modules.token_embedders.Embedding, as ``_ElmoBiLm``'s vocabulary
    cache builds it (a fixed weight, padding row 0)."""
    import torch

    class Embedding(torch.nn.Module):
        def __init__(self, num_embeddings, embedding_dim, weight, trainable=False, padding_index=None):
            super().__init__()
            self.weight = torch.nn.Parameter(weight, requires_grad=trainable)
            self.padding_index = padding_index

        def forward(self, ids):
            return torch.nn.functional.embedding(ids, self.weight, padding_idx=self.padding_index)

    return Embedding


def _stand_ins() -> dict:
    """Module name -> attributes of the plumbing that the real files import."""
    class Unused:  # dataset-pipeline classes: imported by elmo.py, used only by its batch_to_ids
        def __init__(self, *args, **kwargs):
            raise RuntimeError("the dataset pipeline is not loaded; use elmo_dist.batch_to_ids")

    return {
        "allennlp.common": {"FromParams": object, "Registrable": _Registrable},
        "allennlp.common.checks": {"ConfigurationError": _ConfigurationError},
        "allennlp.common.file_utils": {"cached_path": lambda path, *a, **k: str(path)},
        "allennlp.common.util": {"lazy_groups_of": _lazy_groups_of, "pad_sequence_to_length": _pad_sequence_to_length,
                                 "int_to_device": _int_to_device, "is_distributed": lambda: False,
                                 "is_global_primary": lambda: True},
        "allennlp.data.instance": {"Instance": Unused},
        "allennlp.data.tokenizers.token_class": {"Token": Unused},
        "allennlp.data.vocabulary": {"Vocabulary": Unused},
        "allennlp.data.batch": {"Batch": Unused},
        "allennlp.data.fields": {"TextField": Unused},
        "allennlp.data.token_indexers.token_indexer": {"TokenIndexer": _TokenIndexer, "IndexedTokenList": dict},
        "allennlp.modules.token_embedders": {"Embedding": _embedding_class()},
    }


def load(wheel: Path | str) -> types.ModuleType:
    """Returns AllenNLP 2.10.1's ``allennlp.modules.elmo`` module, run from ``wheel``."""
    wheel = Path(wheel)
    if not wheel.is_file():
        raise FileNotFoundError(f"{wheel}: no such wheel; `pip download allennlp==2.10.1 --no-deps -d DIR`")
    if "allennlp" in sys.modules and not getattr(sys.modules["allennlp"], "_elmo_dist_reference", False):
        raise RuntimeError("a real allennlp package is already imported; run the benchmark in a fresh process")
    with zipfile.ZipFile(wheel) as zf:
        sources = {name: zf.read(name.replace(".", "/") + ".py").decode("utf-8") for name in REAL_MODULES}
    for name in PACKAGES:
        module = types.ModuleType(name)
        module.__path__ = []  # a package: submodules resolve through sys.modules
        module._elmo_dist_reference = True
        sys.modules[name] = module
    for name, attrs in _stand_ins().items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module
    sys.modules["allennlp.data.tokenizers"].Token = sys.modules["allennlp.data.tokenizers.token_class"].Token
    for name in REAL_MODULES:
        module = types.ModuleType(name)
        module.__file__ = f"{wheel}!{name.replace('.', '/')}.py"
        sys.modules[name] = module
        parent, _, leaf = name.rpartition(".")
        setattr(sys.modules[parent], leaf, module)
        exec(compile(sources[name], module.__file__, "exec"), module.__dict__)
    elmo = sys.modules["allennlp.modules.elmo"]
    # Its batch_to_ids builds AllenNLP Instances (the dataset pipeline); elmo_dist's gives the same
    # ids (checked against the AllenNLP fixture in tests/golden) and serves the vocabulary cache.
    from elmo_dist.data import batch_to_ids
    elmo.batch_to_ids = batch_to_ids
    return elmo
