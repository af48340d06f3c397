"""gpu_check parts d and e: a training step of the presets, and a short pretraining run.

    python -m benchmarks.gpu_check_train step --out F [--dry-run]
    python -m benchmarks.gpu_check_train pretrain --out F [--dry-run]

``step``: the ``small`` and ``original`` biLMs at B=128, T=20 (a 10k-word full softmax, dropout
off, random words), built once per preset so that both LSTM implementations run on the same
weights and batch: the fp32 loss and every parameter's gradient norm with ``lstm_impl="triton"``
against ``"torch"`` (the CPU path, a hand-written backward; tolerances in TOLERANCE), then
tokens/s of a whole optimizer step (Adagrad 0.2, bilm-tf's) for torch, triton eager and triton
with CUDA graphs, in fp32 and under bf16 autocast.

``pretrain``: ``python -m elmo_dist pretrain --preset small`` on PTB (the default corpus) at
batch 128 for PRETRAIN_MINUTES through the DeepSpeed engine; reports the logged tokens/s and
the held-out (PTB valid) perplexity from the run's metrics.jsonl and summary.json.
The dry run does both on CPU with the tiny preset (Triton under the interpreter; a six-line
corpus instead of PTB).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
GPU = dict(presets=("small", "original"), B=128, T=20, V=10_000, warmup=2, iters=5)
DRY = dict(presets=("tiny",), B=2, T=2, V=40, warmup=0, iters=1)
# fp32, triton vs torch on one batch: both IEEE fp32 with different summation orders.
TOLERANCE = dict(loss_rel=1e-4, grad_norm_rel=1e-3)
# (label, lstm_impl, CUDA graphs, bf16 autocast); the dry run times the first three.
VARIANTS = (("torch", "torch", False, False), ("triton", "triton", False, False), ("triton+graphs", "triton", True, False),
            ("torch bf16", "torch", False, True), ("triton bf16", "triton", False, True),
            ("triton+graphs bf16", "triton", True, True))
PRETRAIN_MINUTES = 1.75  # plus start-up, vocabulary and the final evaluation: about 2.5 min


def _batch(B, T, V, device, seed=0):
    """char ids (B, T, 50) of random words, and random forward / backward targets (B, T)."""
    from elmo_dist.data.chars import batch_to_ids

    gen = torch.Generator().manual_seed(seed)
    words = [f"w{i}x" for i in range(500)]
    rows = [[words[int(i)] for i in torch.randint(0, len(words), (T,), generator=gen)] for _ in range(B)]
    targets = torch.randint(0, V, (2, B, T), generator=gen)
    return batch_to_ids(rows).to(device), targets[0].to(device), targets[1].to(device)


def _set_impl(model, impl: str, graphs: bool) -> None:
    from elmo_dist.model.lstm import LSTMPLayer
    from elmo_dist_kernels.lstmp_triton import GRAPHS_ENV

    for module in model.modules():
        if isinstance(module, LSTMPLayer):
            module.impl = impl
    os.environ[GRAPHS_ENV] = "1" if graphs else "0"  # read at every call when use_cuda_graphs is None


def _loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out, _ = model.lm_loss(*batch)
    out.loss.backward()
    norms = {n: p.grad.norm().item() for n, p in model.named_parameters() if p.grad is not None}
    total = torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]).norm().item()
    return out.loss.item(), norms, total


def compare(model, batch) -> dict:
    """triton against torch on the same weights and batch, fp32."""
    _set_impl(model, "torch", False)
    loss_t, norms_t, total_t = _loss_and_grads(model, batch)
    _set_impl(model, "triton", False)
    loss_k, norms_k, total_k = _loss_and_grads(model, batch)
    floor = 1e-6 * total_t  # a parameter whose gradient is ~0 is compared on the total's scale
    rel = {n: abs(norms_k[n] - norms_t[n]) / max(norms_t[n], floor) for n in norms_t}
    worst = max(rel, key=rel.get)
    loss_rel = abs(loss_k - loss_t) / abs(loss_t)
    ok = loss_rel <= TOLERANCE["loss_rel"] and rel[worst] <= TOLERANCE["grad_norm_rel"]
    return dict(ok=ok, loss_torch=loss_t, loss_triton=loss_k, loss_rel_diff=loss_rel,
                grad_norm_total_torch=total_t, grad_norm_total_triton=total_k,
                grad_norm_worst_param=worst, grad_norm_worst_rel_diff=rel[worst], tolerance=TOLERANCE)


def tokens_per_s(model, batch, impl, graphs, bf16, warmup, iters) -> float:
    """Tokens (B x T) per second of forward + backward + an Adagrad step, median of iters."""
    _set_impl(model, impl, graphs)
    device = batch[0].device
    opt = torch.optim.Adagrad(model.parameters(), lr=0.2)
    times = []
    for i in range(warmup + iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out, _ = model.lm_loss(*batch)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return batch[1].numel() / statistics.median(times)


def train_step(dry_run: bool) -> dict:
    from elmo_dist.model import BiLM, preset
    from elmo_dist_kernels.lstmp_triton import release_cuda_graphs

    cfg = DRY if dry_run else GPU
    device = torch.device("cpu" if dry_run else "cuda")
    presets = []
    for name in cfg["presets"]:
        torch.manual_seed(0)
        model = BiLM(preset(name, vocab_size=cfg["V"], dropout=0.0)).to(device)
        batch = _batch(cfg["B"], cfg["T"], cfg["V"], device)
        row = dict(preset=name, B=cfg["B"], T=cfg["T"], vocab=cfg["V"], comparison=compare(model, batch),
                   tokens_per_s={})
        for label, impl, graphs, bf16 in VARIANTS[:3 if dry_run else None]:
            try:
                row["tokens_per_s"][label] = tokens_per_s(model, batch, impl, graphs, bf16, cfg["warmup"], cfg["iters"])
            except Exception as err:  # noqa: BLE001 - record it and time the next variant
                row["tokens_per_s"][label] = f"failed: {type(err).__name__}: {err}"[:300]
            finally:
                release_cuda_graphs()
        if device.type == "cuda":
            row["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
        presets.append(row)
        print(json.dumps(row), flush=True)
        del model
    bad = [r["preset"] for r in presets if not r["comparison"]["ok"]]
    failed = [f"{r['preset']} {k}" for r in presets for k, v in r["tokens_per_s"].items() if isinstance(v, str)]
    reason = "; ".join(([f"triton vs torch outside tolerance: {', '.join(bad)}"] if bad else [])
                       + ([f"failed: {', '.join(failed)}"] if failed else [])) or None
    return dict(status="failed" if reason else "ok", reason=reason, dropout=0.0,
                graphs_note=None if device.type == "cuda" else "graphs are ignored off CUDA", presets=presets)


def _pretrain_minutes() -> float:
    """PRETRAIN_MINUTES, or less when the driver's time left (GPU_CHECK_TIME_LEFT_S) would not
    hold it and the ~50 s of start-up, vocabulary and final evaluation."""
    left = float(os.environ.get("GPU_CHECK_TIME_LEFT_S", "1e9"))
    return max(0.25, min(PRETRAIN_MINUTES, (left - 50) / 60))


def pretrain(dry_run: bool) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "elmo_dist", "pretrain", "--run-dir", str(run_dir), "--eval-every", "0",
               "--checkpoint-every", "0", "--wandb", "disabled", "--no-progress"]
        if dry_run:
            from tests.corpus import write_corpus
            train, valid = write_corpus(Path(tmp) / "train.txt", 60), write_corpus(Path(tmp) / "valid.txt", 12, seed=1)
            cmd += ["--preset", "tiny", "--corpus", str(train), "--valid", str(valid), "--batch-size", "2",
                    "--num-steps", "5", "--max-steps", "2", "--log-every", "1"]
        else:
            cmd += ["--preset", "small", "--batch-size", "128", "--max-minutes", f"{_pretrain_minutes():.2f}",
                    "--log-every", "20"]
        env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1" if dry_run else "8"))
        t0 = time.time()
        rc = subprocess.run(cmd, cwd=REPO, env=env).returncode
        wall = time.time() - t0
        summary_path, metrics_path = run_dir / "summary.json", run_dir / "metrics.jsonl"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        train = [json.loads(line) for line in metrics_path.read_text().splitlines()
                 if '"kind": "train"' in line] if metrics_path.exists() else []
    rates = [r["tokens_per_s"] for r in train[1:]] or [r["tokens_per_s"] for r in train]  # first: warm-up
    ok = rc == 0 and "valid" in summary
    return dict(status="ok" if ok else "failed", reason=None if ok else f"pretrain exit status {rc}",
                command=" ".join(cmd[1:]), wall_s=round(wall, 1), steps=summary.get("step"),
                train_minutes=summary.get("train_minutes"), tokens_seen=summary.get("tokens_seen"),
                tokens_per_s_median=statistics.median(rates) if rates else None,
                tokens_per_s_logged=rates, valid=summary.get("valid"),
                untrained_valid=summary.get("untrained_valid"), final_train_loss=train[-1]["loss"] if train else None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["step", "pretrain"])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))
    result = (train_step if args.what == "step" else pretrain)(args.dry_run)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.what}: {result['status']} {result.get('reason') or ''}")
    return 0 if result["status"] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main())
