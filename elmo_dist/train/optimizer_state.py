"""The optimizer state in checkpoints: by parameter name, whole, whatever the ZeRO stage.

Saved form: ``{"format": OPTIM_FORMAT, "state": {param name: {key: tensor}}}`` with every
per-element tensor (Adagrad's ``sum``, Adam's ``exp_avg``/``exp_avg_sq``) at the parameter's
full shape and the scalars (``step``) beside them. So a checkpoint written under ZeRO 0, 1 or 2
on any number of ranks resumes under any other.

Only public interfaces are used. ZeRO 0: the torch optimizer's own ``state``. ZeRO 1/2 (each rank
holds a slice of every state tensor): ``deepspeed.utils.safe_get_full_optimizer_state`` /
``safe_set_full_optimizer_state`` for the per-element tensors (a collective on read), and the
wrapped torch optimizer's ``param_groups``/``state`` for the scalars. DeepSpeed links a
parameter's state slices only after the first ``step()`` (Adam creates its state lazily), so a
restore first takes one step at learning rate 0 with zero gradients: the state then exists, and
the parameters are unchanged (every update is scaled by the learning rate).
"""
from __future__ import annotations

import os
from typing import Any, Optional

import torch

OPTIM_FORMAT = "elmo_dist.optimizer_by_name/1"


def _zero_stage(engine) -> int:
    return int(engine.zero_optimization_stage())


def _inner(engine) -> torch.optim.Optimizer:
    """The torch optimizer that steps (ZeRO 1/2 wrap it; its parameters are the flat partitions)."""
    opt = engine.optimizer
    inner = opt if isinstance(opt, torch.optim.Optimizer) else getattr(opt, "optimizer", None)
    if not isinstance(inner, torch.optim.Optimizer):
        raise TypeError(f"cannot read the state of a {type(opt).__name__} optimizer; elmo-dist supports "
                        "ZeRO stages 0-2 with fp32 weights (bf16 through autocast)")
    return inner


def _split_keys(inner: torch.optim.Optimizer) -> tuple[list[str], dict[str, Any]]:
    """(per-element state keys, scalar entries) of the flat partitions' state (ZeRO 1/2)."""
    for group in inner.param_groups:
        for flat in group["params"]:
            st = inner.state.get(flat)
            if st:
                per_element = sorted(k for k, v in st.items() if torch.is_tensor(v) and v.shape == flat.shape)
                return per_element, {k: v for k, v in st.items() if k not in per_element}
    return [], {}


def _cpu(v) -> torch.Tensor:
    return v.detach().to("cpu", copy=True) if torch.is_tensor(v) else torch.tensor(v)


def gather_optimizer_state(engine, model: torch.nn.Module) -> Optional[dict[str, Any]]:
    """The full optimizer state (see the module docstring) on rank 0, None on the others. Under
    ZeRO 1/2 it is a collective: every rank must call it."""
    is_main = int(os.environ.get("RANK", "0")) == 0
    inner = _inner(engine)
    out: dict[str, dict[str, torch.Tensor]] = {}
    if _zero_stage(engine) == 0:
        names = {id(p): n for n, p in model.named_parameters()}
        if is_main:
            out = {names[id(p)]: {k: _cpu(v) for k, v in st.items()} for p, st in inner.state.items() if id(p) in names}
        return {"format": OPTIM_FORMAT, "state": out} if is_main else None
    from deepspeed.utils import safe_get_full_optimizer_state
    keys, scalars = _split_keys(inner)
    for name, p in model.named_parameters():
        entry = {k: _cpu(v) for k, v in scalars.items()}
        for key in keys:  # same keys, same order on every rank: each read is an all-reduce
            entry[key] = safe_get_full_optimizer_state(p, key).detach().to("cpu", torch.float32, copy=True)
        if keys and is_main:
            out[name] = entry
    return {"format": OPTIM_FORMAT, "state": out} if is_main else None


def portable_optimizer_state(saved: dict[str, Any], model: torch.nn.Module) -> dict[str, Any]:
    """``saved`` in the by-name format; converts a plain ``optimizer.state_dict()`` (older
    checkpoints), whose parameter indices follow ``model.parameters()``."""
    if saved.get("format") == OPTIM_FORMAT:
        return saved
    if "state" not in saved or "param_groups" not in saved:
        raise ValueError("optimizer state is neither elmo-dist's by-name format nor a torch state_dict")
    names = [n for n, _ in model.named_parameters()]
    order = [i for g in saved["param_groups"] for i in g["params"]]
    if len(order) != len(names):
        raise ValueError(f"optimizer state covers {len(order)} parameters, the model has {len(names)}")
    by_index = dict(zip(order, names))
    return {"format": OPTIM_FORMAT, "state": {by_index[int(i)]: dict(st) for i, st in saved["state"].items()}}


def load_optimizer_state(engine, model: torch.nn.Module, saved: dict[str, Any]) -> None:
    """Restores state saved by :func:`gather_optimizer_state` (any stage, any world size) into
    the engine's optimizer; under ZeRO each rank takes its own slice. Call before the first step."""
    state = portable_optimizer_state(saved, model)["state"]
    named = list(model.named_parameters())
    missing = [n for n, _ in named if n not in state]
    if state and missing:
        raise ValueError(f"checkpoint optimizer state lacks {len(missing)} parameters, e.g. {missing[:3]}")
    if not state:
        return  # saved before the first step: nothing to restore
    inner = _inner(engine)
    if _zero_stage(engine) == 0:
        for name, p in named:
            inner.state[p] = {k: v.to(p.device) if v.shape == p.shape else v.clone() for k, v in state[name].items()}
        return
    from deepspeed.utils import safe_set_full_optimizer_state
    _materialize_state(engine, model)
    keys, _ = _split_keys(inner)
    for name, p in named:
        for key in keys:
            safe_set_full_optimizer_state(p, state[name][key].to(p.device, p.dtype).reshape(p.shape), key)
    first = state[named[0][0]]
    for group in inner.param_groups:  # the scalars are per flat partition; every parameter saved the same
        for flat in group["params"]:
            for key, value in first.items():
                if not (torch.is_tensor(value) and value.shape == named[0][1].shape and value.dim() > 0):
                    current = inner.state[flat].get(key)
                    inner.state[flat][key] = value.clone().to(current.device if torch.is_tensor(current) else "cpu")


def _materialize_state(engine, model: torch.nn.Module) -> None:
    """One optimizer step at learning rate 0 on zero gradients, so that ZeRO creates the state and
    links each parameter's slices of it; the parameters do not move."""
    groups = engine.optimizer.param_groups
    rates = [g["lr"] for g in groups]
    for g in groups:
        g["lr"] = 0.0
    steps = engine.global_steps
    while engine.global_steps == steps:  # every micro-batch of one accumulation round
        zero = sum((p * 0.0).sum() for p in model.parameters() if p.requires_grad)
        engine.backward(zero)
        engine.step()
    for g, lr in zip(groups, rates):
        g["lr"] = lr
