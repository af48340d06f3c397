"""elmo-dist: pretrain ELMo bidirectional language models and use their layers.

Public API (stable): ``BiLM``, ``ModelConfig``, ``Elmo``, ``ScalarMix``, ``batch_to_ids``,
``embed`` and ``load_embedder`` (embedding to numpy arrays, ``elmo_dist.export.api``).
"""
from .model import BiLM, Elmo, ModelConfig, ScalarMix, preset

__version__ = "0.1.0"


def __getattr__(name):
    # batch_to_ids lives in the data package; imported lazily so `import elmo_dist` stays light.
    if name == "batch_to_ids":
        from .data.chars import batch_to_ids
        return batch_to_ids
    if name in ("embed", "load_embedder"):  # the export package (h5py, tqdm) only when asked for
        from .export import api
        return getattr(api, name)
    raise AttributeError(f"module 'elmo_dist' has no attribute {name!r}")


__all__ = ["BiLM", "Elmo", "ModelConfig", "ScalarMix", "preset", "batch_to_ids", "embed", "load_embedder", "__version__"]
