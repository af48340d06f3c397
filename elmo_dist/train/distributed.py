"""DeepSpeed wiring: launcher environment, process group, engine config, collectives.

One code path serves one process and N nodes: when no launcher set RANK/WORLD_SIZE/... (a plain
``elmo-dist pretrain``), we set the single-process values ourselves, because without them
``deepspeed.initialize`` falls back to MPI discovery and fails. Under ``deepspeed`` or
``torchrun`` the launcher's values are used unchanged.

The engine config is built from the run's TrainConfig/OptimConfig (batch sizes, clipping,
precision) plus an optional user file (``--deepspeed-config``, see launch/) that adds systems
settings: the ZeRO stage and its buckets, communication dtypes. Keys that would contradict the
run's own settings are rejected with the flag to use instead.

The optimizer state of checkpoints (gathered by parameter name, any stage, any world size) is
``optimizer_state.py``'s.
"""
from __future__ import annotations

import json
import os
import socket
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

import torch

from .config import OptimConfig, TrainConfig

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

# Keys the run's own flags decide; a user file may repeat them only with the same value.
_BATCH_KEYS = {"train_micro_batch_size_per_gpu": ("--batch-size", "batch_size"),
               "gradient_accumulation_steps": ("--grad-accum", "grad_accum_steps")}
_REJECTED_KEYS = {
    "optimizer": "elmo-dist builds its own optimizer: use --optimizer/--lr/--warmup-steps",
    "scheduler": "elmo-dist sets the learning rate itself: use --lr/--warmup-steps",
    "fp16": "fp16 is not supported: use bf16 autocast (--precision bf16 or launch/ds_zero*_bf16.json)",
    "bf16": "DeepSpeed's bf16 mode keeps bf16 weights; elmo-dist's bf16 is autocast with fp32 weights "
            "(\"torch_autocast\", as in launch/ds_zero*_bf16.json, or --precision bf16)",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_launcher_env() -> bool:
    """Sets single-process launcher variables when none are present; True if it set them."""
    present = [v for v in LAUNCHER_VARS if v in os.environ]
    if len(present) == len(LAUNCHER_VARS):
        return False
    if present and set(present) != {"MASTER_ADDR", "MASTER_PORT"} and set(present) != {"MASTER_PORT"}:
        missing = [v for v in LAUNCHER_VARS if v not in os.environ]
        from elmo_dist.errors import EnvironmentProblem
        raise EnvironmentProblem(f"launcher environment is incomplete: {missing} unset while {present} are set; "
                           "launch with `deepspeed` or `torchrun`, or unset them all for one process")
    os.environ.setdefault("RANK", "0")
    os.environ.setdefault("WORLD_SIZE", "1")
    os.environ.setdefault("LOCAL_RANK", "0")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", str(_free_port()))
    return True


def world() -> tuple[int, int]:
    """(rank, world_size) from the launcher environment."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init_process_group(timeout_s: float) -> None:
    """Joins the process group (gloo on CPU, NCCL on CUDA); every collective then times out
    after ``timeout_s`` instead of waiting forever for a rank that is gone. No-op if joined."""
    ensure_launcher_env()
    import deepspeed
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return
    if torch.cuda.is_available():
        # NCCL collectives run on the current device: each rank must own its GPU before the first one.
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    timeout = timedelta(seconds=timeout_s)
    store = _restart_store(timeout)
    if store is not None:  # DeepSpeed's init then adopts the group
        from deepspeed.accelerator import get_accelerator
        dist.init_process_group(get_accelerator().communication_backend_name(), store=store, timeout=timeout,
                                rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    deepspeed.init_distributed(timeout=timeout, verbose=False)


def _restart_store(timeout: timedelta):
    """The rendezvous store for a torchrun worker: the agent's store under a key prefix of its
    own restart count; None outside torchrun.

    torchrun's static rendezvous (``--master-addr/--master-port``) hands every restart the same
    agent store, where the killed attempt's gloo/NCCL addresses are still written: the restarted
    ranks would dial the dead processes ("Connection refused") and fail every restart. A prefix
    per attempt gives each attempt clean keys."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if attempt is None:
        return None
    from torch.distributed import PrefixStore, TCPStore
    hosts_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" and os.environ["RANK"] == "0"
    store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), int(os.environ["WORLD_SIZE"]),
                     is_master=hosts_store, timeout=timeout, multi_tenant=True)
    return PrefixStore(f"elmo-dist/attempt-{attempt}", store)


# ----------------------------------------------------------------------------- collectives
def _dist():
    import torch.distributed as dist
    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


def gather_to_main(obj: Any) -> Optional[list]:
    """Every rank's ``obj`` (picklable, CPU) as a list on rank 0; None on the other ranks."""
    dist = _dist()
    if dist is None:
        return [obj]
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (so that all ranks act on one decision)."""
    dist = _dist()
    if dist is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_sum(values: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sums a small CPU tensor over ranks (on ``device``: NCCL reduces only GPU tensors)."""
    dist = _dist()
    if dist is None:
        return values
    t = values.to(device)
    dist.all_reduce(t)
    return t.cpu()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank if ``flag`` is True on any rank."""
    return any_rank_each([flag], device)[0]


def any_rank_each(flags: list[bool], device: torch.device) -> list[bool]:
    """Per flag, True on every rank if it is True on any rank: one collective for all of them."""
    dist = _dist()
    if dist is None:
        return list(flags)
    t = torch.tensor([1.0 if f else 0.0 for f in flags], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def barrier() -> None:
    dist = _dist()
    if dist is not None:
        dist.barrier()


# ----------------------------------------------------------------------------- engine config
def load_user_config(path: Path) -> dict[str, Any]:
    """A DeepSpeed JSON config file (see launch/), checked for keys elmo-dist decides itself."""
    try:
        cfg = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such DeepSpeed config; see launch/ds_zero*_*.json for examples") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: DeepSpeed config is not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}: a DeepSpeed config must be a JSON object")
    for key, why in _REJECTED_KEYS.items():
        if key in cfg and (key not in ("fp16", "bf16") or cfg[key].get("enabled", False)):
            raise ValueError(f"{path}: remove {key!r}: {why}")
    zero = cfg.get("zero_optimization", {})
    stage = int(zero.get("stage", 0))
    if stage not in (0, 1, 2):
        raise ValueError(f"{path}: zero_optimization.stage {stage} is not supported; use 0, 1 or 2 (launch/SCALING.md: "
                         "the biLM's weights fit on one GPU, so stage 3 only adds communication)")
    for key in ("offload_optimizer", "offload_param"):
        if zero.get(key, {}).get("device", "none") not in ("none", None):
            raise ValueError(f"{path}: zero_optimization.{key} is not supported; remove it (the state of the "
                             "largest preset fits in GPU memory, launch/SCALING.md)")
    return cfg


def config_precision(user: Optional[dict[str, Any]]) -> Optional[str]:
    """"bf16" when a user config turns on bf16 autocast, else None (the run's --precision holds)."""
    autocast = (user or {}).get("torch_autocast", {})
    if autocast.get("enabled", False):
        if str(autocast.get("dtype", "bfloat16")).replace("torch.", "") != "bfloat16":
            raise ValueError("torch_autocast.dtype must be bfloat16 (fp16 needs loss scaling, which elmo-dist does not do)")
        return "bf16"
    return None


def check_global_batch(train: TrainConfig, world_size: int, user: Optional[dict[str, Any]] = None,
                       source: str = "the DeepSpeed config") -> int:
    """Global batch rows = micro-batch x gradient accumulation x world size; raises ValueError
    naming every factor and the change to make when a user config asks for something else."""
    micro, accum = train.batch_size, train.grad_accum_steps
    user = user or {}
    for key, (flag, field) in _BATCH_KEYS.items():
        if key in user and int(user[key]) != getattr(train, field):
            raise ValueError(f"{key}={user[key]} in {source} but {flag} is {getattr(train, field)}; pass {flag} "
                             f"{user[key]} or remove {key} from {source}")
    total = micro * accum * world_size
    want = user.get("train_batch_size")
    if want is not None and int(want) != total:
        want = int(want)
        per_step = micro * world_size
        fix = (f"pass --grad-accum {want // per_step}" if want % per_step == 0
               else f"choose a train_batch_size divisible by {per_step} (micro-batch x world size)")
        raise ValueError(f"global batch mismatch: train_batch_size {want} in {source} != micro-batch {micro} "
                         f"(--batch-size) x gradient accumulation {accum} (--grad-accum) x world size {world_size} "
                         f"(ranks) = {total}; {fix}, or remove train_batch_size from {source}")
    return total


def deepspeed_config(train: TrainConfig, optim: OptimConfig, user: Optional[dict[str, Any]] = None,
                     source: str = "the DeepSpeed config") -> dict[str, Any]:
    """The engine config: data parallel (ZeRO 0 unless ``user`` says 1 or 2), our optimizer and clipping."""
    _, world_size = world()
    user = dict(user or {})
    if "gradient_clipping" in user and float(user["gradient_clipping"]) != float(optim.grad_clip):
        raise ValueError(f"gradient_clipping={user['gradient_clipping']} in {source} but --grad-clip is "
                         f"{optim.grad_clip}; pass --grad-clip {user['gradient_clipping']} or remove it from {source}")
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": train.batch_size,
        "gradient_accumulation_steps": train.grad_accum_steps,
        "train_batch_size": check_global_batch(train, world_size, user, source),
        # DeepSpeed's default is 1.0; bilm-tf clips at 10. 0 disables.
        "gradient_clipping": float(optim.grad_clip),
        "zero_optimization": {"stage": 0},
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    for key, value in user.items():
        if key not in cfg or key in ("zero_optimization", "steps_per_print", "wall_clock_breakdown"):
            cfg[key] = value
    if int(cfg["zero_optimization"].get("stage", 0)) > 0:
        # Adagrad (the bilm-tf optimizer) is not on DeepSpeed's list of ZeRO-tested optimizers;
        # ZeRO 1/2 only partitions its state, which torch.optim.Adagrad keeps per element.
        cfg["zero_allow_untested_optimizer"] = True
    if train.precision == "bf16":
        # Autocast keeps fp32 master weights and plain optimizer state (checkpoints stay
        # loadable with weights_only=True) and works the same on CPU and GPU.
        cfg["torch_autocast"] = {"enabled": True, "dtype": "bfloat16"}
    return cfg


def zero_stage(ds_config: dict[str, Any]) -> int:
    return int(ds_config.get("zero_optimization", {}).get("stage", 0))


def build_optimizer(params, optim: OptimConfig) -> torch.optim.Optimizer:
    """Adagrad (bilm-tf: AdagradOptimizer(lr, initial_accumulator_value=1.0)) or AdamW, fused
    where torch has a fused kernel for the parameters' device: one pass over each tensor instead
    of a chain of elementwise ops (Adagrad at the small preset's 15M parameters: 26 -> 8 ms per
    step on 2 cores; the updates agree with the unfused ones to an ulp)."""
    params = list(params)
    devices = {p.device.type for p in params}
    if optim.optimizer == "adagrad":
        fused = devices == {"cpu"}  # torch's fused Adagrad is a CPU kernel
        return torch.optim.Adagrad(params, lr=optim.lr, initial_accumulator_value=1.0,
                                   weight_decay=optim.weight_decay, fused=fused or None)
    fused = bool(devices) and devices <= {"cpu", "cuda"}
    return torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay, fused=fused or None)


def initialize_engine(module: torch.nn.Module, optimizer: torch.optim.Optimizer, ds_config: dict[str, Any]):
    """deepspeed.initialize with the launcher environment in place; returns the engine.

    Under ZeRO 1/2, ``engine.optimizer`` (not the optimizer passed in) owns the parameter
    groups and the state: set the learning rate and read the state there.
    """
    ensure_launcher_env()
    import deepspeed  # imported here: model code and `--help` never pay for it
    engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer, config=ds_config)
    if engine.dp_world_size == 1 and zero_stage(ds_config) == 0:
        # One process has nothing to average, but the engine still flattens every gradient into
        # a bucket, "all-reduces" it and copies it back: 17 ms of a 526 ms small step.
        engine.enable_backward_allreduce = False
    return engine


