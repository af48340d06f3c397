"""Import and export of the bilm-tf / AllenNLP ELMo format: options.json + lm_weights.hdf5.

One table, :func:`weight_table`, lists every HDF5 dataset of a model with its shape and the
parameter it maps to, so import and export are the same code read in two directions and a
round trip is exact (float32 both ways). Layout (docs/DESIGN.md, "The ELMo model and its stored format"):

    char_embed                  (261, d)            rows 1.. of the (262, d) embedding; row 0 = padding
    CNN/W_cnn_{i}               (1, w_i, d, n_i)    Conv1d weight (n_i, d, w_i), transposed
    CNN/b_cnn_{i}               (n_i,)
    CNN_high_{k}/W_carry        (F, F)              x @ W form: nn.Linear weight transposed
    CNN_high_{k}/b_carry, W_transform, b_transform
    CNN_proj/W_proj             (F, P),  CNN_proj/b_proj (P,)
    RNN_{d}/RNN/MultiRNNCell/Cell{l}/LSTMCell/W_0    (P + P, 4H)  [input_weight; recurrent_weight]
    RNN_{d}/RNN/MultiRNNCell/Cell{l}/LSTMCell/B      (4H,)         gate order i, j, f, o
    RNN_{d}/RNN/MultiRNNCell/Cell{l}/LSTMCell/W_P_0  (H, P)
    (d = 0 forward, 1 backward)

The format has no softmax; :func:`save_softmax` writes it to a separate HDF5 file
(``softmax/W`` (V, P) and ``softmax/b`` (V,) as bilm-tf names them, or the adaptive softmax's
tensors under ``adaptive/``) with the kind and sizes as attributes.

Every problem with the files raises :class:`ELMoFormatError` (a ValueError) whose message is
one line naming the file and the option or dataset at fault. h5py and numpy are imported
inside the functions so that importing the model package stays torch-only.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import torch
from torch import Tensor, nn

from .config import ModelConfig

OPTIONS_FILE = "options.json"
WEIGHTS_FILE = "lm_weights.hdf5"
SOFTMAX_FILE = "softmax_weights.hdf5"
ELMO_CHARS_PER_TOKEN = 50
ELMO_CHAR_ROWS = 261  # stored rows of char_embed; the model adds the padding row 0


class ELMoFormatError(ValueError):
    """An options or weight file does not fit the ELMo format; the message names what and where."""


# ---------------------------------------------------------------------------------- options
def _get(options: dict, path: str, source: str, required: bool = True, default: Any = None) -> Any:
    node: Any = options
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            if required:
                raise ELMoFormatError(f"{source}: missing option {path!r}")
            return default
        node = node[key]
    return node


def _positive_int(value: Any, path: str, source: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ELMoFormatError(f"{source}: option {path!r} must be an integer >= {minimum}; got {value!r}")
    return value


def _clip(value: Any, path: str, source: str) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ELMoFormatError(f"{source}: option {path!r} must be a positive number or null; got {value!r}")
    return float(value)


def config_from_options(options: dict, source: str = OPTIONS_FILE, **overrides) -> ModelConfig:
    """ModelConfig for a bilm-tf / AllenNLP options dict (``overrides`` set non-format fields).

    Required: lstm.{dim, projection_dim, n_layers, use_skip_connections},
    char_cnn.{filters, n_highway, embedding.dim, activation, max_characters_per_token}.
    Optional: lstm.cell_clip / lstm.proj_clip (absent or null: no clipping, as in bilm-tf),
    char_cnn.n_characters (261 or 262), bidirectional (must be true), dropout.
    """
    if not isinstance(options, dict):
        raise ELMoFormatError(f"{source}: options must be a JSON object; got {type(options).__name__}")
    lstm_dim = _positive_int(_get(options, "lstm.dim", source), "lstm.dim", source)
    proj_dim = _positive_int(_get(options, "lstm.projection_dim", source), "lstm.projection_dim", source)
    n_layers = _positive_int(_get(options, "lstm.n_layers", source), "lstm.n_layers", source)
    skip = _get(options, "lstm.use_skip_connections", source)
    if not isinstance(skip, bool):
        raise ELMoFormatError(f"{source}: option 'lstm.use_skip_connections' must be true or false; got {skip!r}")
    cell_clip = _clip(_get(options, "lstm.cell_clip", source, required=False), "lstm.cell_clip", source)
    proj_clip = _clip(_get(options, "lstm.proj_clip", source, required=False), "lstm.proj_clip", source)

    filters = _get(options, "char_cnn.filters", source)
    if (not isinstance(filters, list) or not filters
            or any(not isinstance(f, (list, tuple)) or len(f) != 2 for f in filters)):
        raise ELMoFormatError(f"{source}: option 'char_cnn.filters' must be a non-empty list of [width, count]; got {filters!r}")
    for f in filters:
        for v in f:
            _positive_int(v, "char_cnn.filters", source)
    n_highway = _positive_int(_get(options, "char_cnn.n_highway", source), "char_cnn.n_highway", source, minimum=0)
    char_dim = _positive_int(_get(options, "char_cnn.embedding.dim", source), "char_cnn.embedding.dim", source)
    activation = _get(options, "char_cnn.activation", source)
    if activation not in ("relu", "tanh"):
        raise ELMoFormatError(f"{source}: option 'char_cnn.activation' must be 'relu' or 'tanh'; got {activation!r}")
    max_chars = _get(options, "char_cnn.max_characters_per_token", source)
    if max_chars != ELMO_CHARS_PER_TOKEN:
        raise ELMoFormatError(f"{source}: option 'char_cnn.max_characters_per_token' must be {ELMO_CHARS_PER_TOKEN} "
                              f"(the ELMo character id format); got {max_chars!r}")
    if max(f[0] for f in filters) > max_chars:
        raise ELMoFormatError(f"{source}: option 'char_cnn.filters' has a filter wider than max_characters_per_token")
    n_chars = _get(options, "char_cnn.n_characters", source, required=False, default=262)
    if n_chars not in (261, 262):
        raise ELMoFormatError(f"{source}: option 'char_cnn.n_characters' must be 261 or 262; got {n_chars!r}")
    if _get(options, "bidirectional", source, required=False, default=True) is not True:
        raise ELMoFormatError(f"{source}: option 'bidirectional' must be true (elmo-dist models are biLMs)")
    dropout = _get(options, "dropout", source, required=False, default=0.1)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ELMoFormatError(f"{source}: option 'dropout' must be a number in [0, 1); got {dropout!r}")
    fields = dict(lstm_dim=lstm_dim, projection_dim=proj_dim, n_layers=n_layers, cell_clip=cell_clip,
                  proj_clip=proj_clip, use_skip_connections=skip, char_embed_dim=char_dim,
                  filters=[[int(w), int(c)] for w, c in filters], n_highway=n_highway, activation=activation,
                  max_characters_per_token=max_chars, n_characters=262, dropout=float(dropout), vocab_size=0)
    fields.update(overrides)
    return ModelConfig(**fields)


def options_from_config(config: ModelConfig) -> dict:
    """The options.json dict of a model (the fields AllenNLP reads, plus bilm-tf's extras)."""
    options = {
        "lstm": {"dim": config.lstm_dim, "projection_dim": config.projection_dim, "n_layers": config.n_layers,
                 "cell_clip": config.cell_clip, "proj_clip": config.proj_clip,
                 "use_skip_connections": config.use_skip_connections},
        "char_cnn": {"activation": config.activation, "filters": [list(f) for f in config.filters],
                     "n_highway": config.n_highway, "embedding": {"dim": config.char_embed_dim},
                     "n_characters": config.n_characters,
                     "max_characters_per_token": config.max_characters_per_token},
        "bidirectional": True,
        "dropout": config.dropout,
    }
    if config.vocab_size:
        options["n_tokens_vocab"] = config.vocab_size
    return options


def read_options(options_file: Path | str, **overrides) -> ModelConfig:
    """Parses and validates an options.json file into a ModelConfig."""
    path = Path(options_file)
    try:
        options = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ELMoFormatError(f"{path}: options file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ELMoFormatError(f"{path}: options file is not valid JSON ({e})") from None
    return config_from_options(options, str(path), **overrides)


# ---------------------------------------------------------------------------------- weights
class WeightEntry(NamedTuple):
    """One HDF5 dataset: its name, its shape, and how to read it from / write it into the model."""
    name: str
    shape: tuple
    get: Callable[[], Tensor]  # the model's value in the file layout
    set: Callable[[Tensor], None]  # copies a file-layout tensor into the model


def _copy(param: Tensor, value: Tensor) -> None:
    with torch.no_grad():
        param.copy_(value)


def _linear_entries(prefix: str, w_name: str, b_name: str, linear: nn.Linear) -> list[WeightEntry]:
    """An nn.Linear stored TF-style as x @ W + b: W = weight.T."""
    out_dim, in_dim = linear.weight.shape
    return [WeightEntry(f"{prefix}/{w_name}", (in_dim, out_dim), lambda: linear.weight.t(),
                        lambda v: _copy(linear.weight, v.t())),
            WeightEntry(f"{prefix}/{b_name}", (out_dim,), lambda: linear.bias, lambda v: _copy(linear.bias, v))]


def weight_table(model) -> list[WeightEntry]:
    """Every dataset of ``model`` (a BiLM) in the bilm-tf layout, in file order."""
    enc = model.encoder
    entries = []

    def set_char(v: Tensor) -> None:
        _copy(enc.char_embed.weight[1:], v)
        _copy(enc.char_embed.weight[0], torch.zeros_like(v[0]))

    d = enc.char_embed.weight.shape[1]
    entries.append(WeightEntry("char_embed", (enc.char_embed.weight.shape[0] - 1, d),
                               lambda: enc.char_embed.weight[1:], set_char))
    for i, conv in enumerate(enc.convs):
        count, cdim, width = conv.weight.shape
        entries.append(WeightEntry(f"CNN/W_cnn_{i}", (1, width, cdim, count),
                                   lambda c=conv: c.weight.permute(2, 1, 0).unsqueeze(0),
                                   lambda v, c=conv: _copy(c.weight, v[0].permute(2, 1, 0))))
        entries.append(WeightEntry(f"CNN/b_cnn_{i}", (count,), lambda c=conv: c.bias,
                                   lambda v, c=conv: _copy(c.bias, v)))
    for k, hw in enumerate(enc.highways):
        entries += _linear_entries(f"CNN_high_{k}", "W_carry", "b_carry", hw.carry)
        entries += _linear_entries(f"CNN_high_{k}", "W_transform", "b_transform", hw.transform)
    entries += _linear_entries("CNN_proj", "W_proj", "b_proj", enc.proj)
    for direction, stack in enumerate((model.forward_lm, model.backward_lm)):
        for l, layer in enumerate(stack.layers):
            cell = f"RNN_{direction}/RNN/MultiRNNCell/Cell{l}/LSTMCell"
            n_in = layer.input_weight.shape[0]

            def set_w0(v: Tensor, layer=layer, n_in=n_in) -> None:
                _copy(layer.input_weight, v[:n_in])
                _copy(layer.recurrent_weight, v[n_in:])

            entries.append(WeightEntry(
                f"{cell}/W_0", (n_in + layer.recurrent_weight.shape[0], layer.input_weight.shape[1]),
                lambda layer=layer: torch.cat([layer.input_weight, layer.recurrent_weight], dim=0), set_w0))
            entries.append(WeightEntry(f"{cell}/B", tuple(layer.bias.shape), lambda layer=layer: layer.bias,
                                       lambda v, layer=layer: _copy(layer.bias, v)))
            entries.append(WeightEntry(f"{cell}/W_P_0", tuple(layer.proj_weight.shape),
                                       lambda layer=layer: layer.proj_weight,
                                       lambda v, layer=layer: _copy(layer.proj_weight, v)))
    return entries


def _open_hdf5(path: Path, what: str):
    import h5py
    if not path.is_file():
        raise ELMoFormatError(f"{path}: {what} not found")
    try:
        return h5py.File(path, "r")
    except OSError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ELMoFormatError(f"{path}: not a readable HDF5 file, corrupt or truncated ({reason})") from None


def _read_dataset(f, path: Path, name: str, shape: tuple) -> Tensor:
    import h5py
    import numpy as np
    obj = f.get(name)
    if obj is None:
        raise ELMoFormatError(f"{path}: missing dataset {name!r}")
    if not isinstance(obj, h5py.Dataset):
        raise ELMoFormatError(f"{path}: {name!r} is a group, expected a dataset of shape {shape}")
    if tuple(obj.shape) != tuple(shape):
        raise ELMoFormatError(f"{path}: dataset {name!r} has shape {tuple(obj.shape)}, "
                              f"the options need {tuple(shape)}")
    try:
        value = obj[...]
    except (OSError, RuntimeError) as e:  # truncated or corrupt chunk data
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ELMoFormatError(f"{path}: dataset {name!r} cannot be read, the file is corrupt or truncated ({reason})") from None
    if not np.issubdtype(value.dtype, np.floating):
        raise ELMoFormatError(f"{path}: dataset {name!r} has dtype {value.dtype}, expected floating point")
    if not np.isfinite(value).all():
        raise ELMoFormatError(f"{path}: dataset {name!r} holds NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32))


def load_weights(model, weight_file: Path | str) -> None:
    """Copies every dataset of a bilm-tf lm_weights.hdf5 into ``model`` (a BiLM), checking shapes.

    The softmax, if the model has one, is left as it is (the format does not hold it).
    """
    path = Path(weight_file)
    with _open_hdf5(path, "weight file") as f:
        values = [(entry, _read_dataset(f, path, entry.name, entry.shape)) for entry in weight_table(model)]
    for entry, value in values:
        entry.set(value.to(dtype=_param_dtype(model)))


def _param_dtype(model) -> torch.dtype:
    return model.encoder.proj.weight.dtype


def save_weights(model, weight_file: Path | str) -> None:
    """Writes ``model``'s weights (no softmax) to an HDF5 file in the bilm-tf layout, atomically."""
    import h5py
    from elmo_dist.utils import atomic_path
    with atomic_path(weight_file) as tmp, h5py.File(tmp, "w") as f:
        for entry in weight_table(model):
            f.create_dataset(entry.name, data=entry.get().detach().to("cpu", torch.float32).numpy())


# ---------------------------------------------------------------------------------- softmax
def save_softmax(model, softmax_file: Path | str) -> None:
    """Writes the model's softmax (full: softmax/W (V, P), softmax/b (V,); adaptive: its tensors)."""
    import h5py
    from elmo_dist.utils import atomic_path
    if model.softmax is None:
        raise ValueError("this model has no softmax (vocab_size=0); nothing to save")
    cfg = model.config
    with atomic_path(softmax_file) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["kind"] = cfg.softmax
        f.attrs["vocab_size"] = cfg.vocab_size
        f.attrs["projection_dim"] = cfg.projection_dim
        if cfg.softmax == "full":
            f.create_dataset("softmax/W", data=model.softmax.proj.weight.detach().cpu().float().numpy())
            f.create_dataset("softmax/b", data=model.softmax.proj.bias.detach().cpu().float().numpy())
        else:
            f.attrs["adaptive_cutoffs"] = list(cfg.adaptive_cutoffs)
            f.attrs["adaptive_div_value"] = float(cfg.adaptive_div_value)
            for key, value in model.softmax.state_dict().items():
                f.create_dataset(f"adaptive/{key}", data=value.detach().cpu().float().numpy())


def read_softmax_config(softmax_file: Path | str) -> dict[str, Any]:
    """The ModelConfig fields (softmax kind, vocab_size, adaptive settings) a softmax file needs."""
    path = Path(softmax_file)
    with _open_hdf5(path, "softmax file") as f:
        for key in ("kind", "vocab_size"):
            if key not in f.attrs:
                raise ELMoFormatError(f"{path}: missing attribute {key!r} (not a softmax file written by elmo-dist)")
        kind = str(f.attrs["kind"])
        fields: dict[str, Any] = {"softmax": kind, "vocab_size": int(f.attrs["vocab_size"])}
        if kind == "adaptive":
            fields["adaptive_cutoffs"] = [int(c) for c in f.attrs["adaptive_cutoffs"]]
            fields["adaptive_div_value"] = float(f.attrs["adaptive_div_value"])
        elif kind != "full":
            raise ELMoFormatError(f"{path}: attribute 'kind' must be 'full' or 'adaptive'; got {kind!r}")
    return fields


def load_softmax(model, softmax_file: Path | str) -> None:
    """Copies a softmax file written by :func:`save_softmax` into ``model.softmax``."""
    path = Path(softmax_file)
    if model.softmax is None:
        raise ValueError("this model has no softmax (vocab_size=0) to load into")
    with _open_hdf5(path, "softmax file") as f:
        if model.config.softmax == "full":
            V, P = model.config.vocab_size, model.config.projection_dim
            w = _read_dataset(f, path, "softmax/W", (V, P))
            b = _read_dataset(f, path, "softmax/b", (V,))
            values = {"proj.weight": w, "proj.bias": b}
        else:
            values = {key: _read_dataset(f, path, f"adaptive/{key}", tuple(value.shape))
                      for key, value in model.softmax.state_dict().items()}
    model.softmax.load_state_dict({k: v.to(_param_dtype(model)) for k, v in values.items()})


# ---------------------------------------------------------------------------------- whole model
def load_allennlp(options_file: Path | str, weight_file: Path | str, softmax_file: Path | str | None = None,
                  stateful: bool = True, **overrides):
    """A BiLM from options.json + lm_weights.hdf5 (+ an optional elmo-dist softmax file), in eval mode.

    ``overrides`` set ModelConfig fields the format does not hold (e.g. ``lstm_impl``).
    """
    from .bilm import BiLM
    if softmax_file is not None:
        overrides = {**read_softmax_config(softmax_file), **overrides}
    config = read_options(options_file, **overrides)
    model = BiLM(config, stateful=stateful)
    load_weights(model, weight_file)
    if softmax_file is not None:
        load_softmax(model, softmax_file)
    return model.eval()


def save_allennlp(model, out_dir: Path | str, softmax: bool = True) -> dict[str, Path]:
    """Writes options.json and lm_weights.hdf5 (and softmax_weights.hdf5 when the model has a
    softmax and ``softmax``) into ``out_dir``; returns the paths written, by role."""
    from elmo_dist.utils import atomic_write_text
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"options": out / OPTIONS_FILE, "weights": out / WEIGHTS_FILE}
    save_weights(model, paths["weights"])
    atomic_write_text(paths["options"], json.dumps(options_from_config(model.config), indent=2) + "\n")
    if softmax and model.softmax is not None:
        paths["softmax"] = out / SOFTMAX_FILE
        save_softmax(model, paths["softmax"])
    return paths
