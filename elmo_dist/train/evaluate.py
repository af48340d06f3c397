"""Held-out perplexity of a biLM: forward, backward and their average.

The corpus is cut into ``batch_size`` contiguous regions read once (WindowBatcher with
loop=False) and the LSTM state is carried from window to window along each row, as in
training, so every word is predicted with the context of its region. Each sentence contributes
n + 1 targets per direction (its words and </S> forward, its words and <S> backward), the
standard Penn Treebank count.

ppl_fwd = exp(sum nll_fwd / N_fwd), ppl_bwd likewise, and ppl = exp of the mean of the two
mean losses (bilm-tf's "average perplexity").
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from tqdm import tqdm

from elmo_dist.data import Corpus, Vocabulary, WindowBatcher
from elmo_dist.model import BiLM

from elmo_dist.metrics import perplexity


def reduce_sums(sums: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sums a small tensor of totals across ranks when torch.distributed is up.

    The reduction runs on ``device`` (NCCL reduces CUDA tensors only) and returns a CPU tensor.
    """
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        on_device = sums.to(device)
        dist.all_reduce(on_device)
        return on_device.cpu()
    return sums


@torch.no_grad()
def evaluate_perplexity(model: BiLM, corpus: Corpus, vocab: Vocabulary, batch_size: int = 32,
                        num_steps: int = 20, max_batches: Optional[int] = None,
                        progress: bool = False, device: Optional[torch.device] = None,
                        row_start: int = 0, total_rows: Optional[int] = None,
                        autocast_dtype: Optional[torch.dtype] = None) -> dict[str, float]:
    """Returns {"ppl_fwd", "ppl_bwd", "ppl", "loss", "targets_fwd", "targets_bwd", "batches"};
    ``ValueError`` when the corpus holds no token (a perplexity of nothing is not a number)."""
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    batcher = WindowBatcher(corpus, vocab, batch_size, num_steps, row_start=row_start,
                            total_rows=total_rows, loop=False)
    sums = torch.zeros(4, dtype=torch.float64)  # fwd nll, fwd count, bwd nll, bwd count
    state = None
    batches = 0
    bar = tqdm(total=max_batches, desc="evaluate", unit="batch", disable=not progress, leave=False)
    try:
        for batch in batcher:
            if max_batches is not None and batches >= max_batches:
                break
            batch = batch.to(device)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
                out, state = model.lm_loss(batch.char_ids, batch.fwd_targets, batch.bwd_targets, state)
            sums += torch.tensor([out.fwd_nll.item(), out.fwd_count.item(), out.bwd_nll.item(), out.bwd_count.item()],
                                 dtype=torch.float64)
            batches += 1
            bar.update(1)
            if batches % 10 == 0:
                bar.set_postfix(ppl_fwd=f"{perplexity(sums[0].item(), sums[1].item()):.1f}")
    finally:
        bar.close()
        model.train(was_training)
    sums = reduce_sums(sums, device)
    fwd_nll, fwd_n, bwd_nll, bwd_n = sums.tolist()
    if fwd_n == 0 and max_batches != 0:
        names = ", ".join(str(f) for f in corpus.files[:3]) + (", ..." if len(corpus.files) > 3 else "")
        what = "is empty (0 bytes)" if corpus.total_bytes == 0 else f"holds no tokens ({batcher.report.summary()})"
        raise ValueError(f"nothing to evaluate: the corpus {names} {what}; give a corpus with text")
    loss = 0.5 * (fwd_nll / max(fwd_n, 1) + bwd_nll / max(bwd_n, 1))
    return {
        "ppl_fwd": perplexity(fwd_nll, fwd_n),
        "ppl_bwd": perplexity(bwd_nll, bwd_n),
        "ppl": math.exp(loss) if loss < 700 else float("inf"),
        "loss": loss,
        "targets_fwd": int(fwd_n),
        "targets_bwd": int(bwd_n),
        "batches": batches,
    }
