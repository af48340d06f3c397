"""CPU benchmark: ELMo embedding throughput, elmo-dist against an AllenNLP-style baseline, one run.

Setup (the issue's): the ``small`` sizes (char CNN 2048 filters, 1 highway, LSTM 1024/128, 2
layers), random weights, no softmax; Penn Treebank sentences of 20-30 tokens in corpus order,
batches of 32, stateless, ``--threads`` torch threads (default 2). Tokens/s counts real tokens
(boundaries and padding excluded). Variants, all on the same weights:

  allennlp-2.10.1 AllenNLP's own ``_ElmoBiLm`` (what its ``Elmo`` and ``ElmoEmbedder`` run), loaded
                  from its wheel by ``allennlp_reference.py`` with ``--allennlp-wheel``, on
                  weights written by ``BiLM.to_allennlp``; LSTM state reset before every batch
                  (stateless); boundaries removed as ``Elmo`` does. The baseline when present.
  allennlp-2.10.1-vocab-cache  the same with AllenNLP's ``vocab_to_cache`` holding every word of
                  the batches (built before timing) and word ids passed in: its CNN-free mode,
                  the counterpart of embedder-warm (its padding row zeroed, see allennlp_variants)
  allennlp-style  the same computation re-implemented here, for machines without the wheel: <S>/</S>
                  added, the char CNN over every token slot (padding included), AllenNLP's
                  Highway form, then per direction and layer a per-step LstmCellWithProjection
                  loop (rows sorted by length, the active batch shrinking as rows end). The
                  baseline when the wheel is not given.
  bilm.forward    ``BiLM.forward``: char CNN once per distinct token of the batch over each
                  token's characters, LSTM input projection as one matmul, elmo_dist_kernels'
                  torch LSTMP
  embedder-cold   ``elmo_dist.export.Embedder``, a fresh one: a cache across batches of what
                  depends on a word alone (its CNN output, its first-layer input projections, its
                  first-step LSTM states), starting empty; sentence boundaries never run; the
                  other n - 1 steps a direction on packed sequences (no padding computed); with 2
                  threads the two directions run in two threads, 1 intra-op thread each
  embedder-warm   the same Embedder on a second pass (every word cached: CNN cost gone)
  embedder-warm-serial  the warm Embedder with the directions one after the other (intra-op
                  threads only), to show what the two-thread split gives
  embedder-stream a fresh Embedder over ``--stream-batches`` batches (default 300: 9,600
                  sentences, the first 640 being the others' batches), as an export of a corpus
                  sees it: the stream's new words encoded in large CNN batches first (the export
                  does that per 10,000 lines), then batch by batch; all of it inside the figure

Each variant runs ``--repeats`` times, interleaved with the others so that a change of machine
load hits all of them; the median is reported, with ratios to the baseline measured in the same
run and to AllenNLP's figure from the issue (1,744 tokens/s, measured by the project on an idle
2-thread machine of another CPU model). The outputs of every variant are compared with
``bilm.forward`` (max abs difference), so a fast wrong path cannot pass.

    pip download allennlp==2.10.1 --no-deps -d /tmp/allennlp     # optional: the real baseline
    python benchmarks/bench_embed.py [--threads 2] [--batches 20] [--stream-batches 300] [--repeats 3]
        [--allennlp-wheel /tmp/allennlp/allennlp-2.10.1-py3-none-any.whl] [--out FILE]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
ALLENNLP_TOKENS_PER_S = 1744.0  # AllenNLP 2.10.1 Elmo, small sizes, 2 CPU threads, stateless (issue 3)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    p.add_argument("--batches", type=int, default=20, help="batches of 32 sentences per pass (default 20)")
    p.add_argument("--batch-size", type=int, default=32, help="sentences per batch (default 32)")
    p.add_argument("--stream-batches", type=int, default=300,
                   help="batches for the embedder-stream variant (default 300; 0 leaves it out)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per variant; the median is kept (default 3)")
    p.add_argument("--baseline-batches", type=int, default=None,
                   help="batches for the slow baseline (default: all); its tokens/s is per real token either way")
    p.add_argument("--allennlp-wheel", type=Path, default=None,
                   help="allennlp-2.10.1-py3-none-any.whl (pip download allennlp==2.10.1 --no-deps): "
                        "adds AllenNLP's own ELMo as the baseline")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cpu" / "embed_small.json",
                   help="JSON results path")
    return p.parse_args(argv)


def ptb_batches(n_batches: int, batch_size: int) -> list[list[list[str]]]:
    from elmo_dist.data import ptb_paths
    from elmo_dist.train.rundir import cache_dir
    path = ptb_paths(cache_dir() / "ptb")["train"]
    sents = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            tokens = line.split()
            if 20 <= len(tokens) <= 30:
                sents.append(tokens)
                if len(sents) == n_batches * batch_size:
                    break
    return [sents[i:i + batch_size] for i in range(0, len(sents), batch_size)]


class AllenNLPStyle:
    """AllenNLP 2.10.1's Elmo inference path on a BiLM's weights (see the module docstring)."""

    def __init__(self, bilm):
        enc, cfg = bilm.encoder, bilm.config
        self.bilm, self.cfg = bilm, cfg
        self.char_embed = enc.char_embed.weight.detach()
        self.convs = [(c.weight.detach(), c.bias.detach()) for c in enc.convs]
        # AllenNLP Highway: one Linear(F, 2F) -> (nonlinear, gate); out = gate*x + (1-gate)*relu(nl),
        # i.e. its gate is 1 - g of the TF convention (the loader negates W_carry and b_carry).
        self.highways = [(torch.cat([h.transform.weight, -h.carry.weight]).detach(),
                          torch.cat([h.transform.bias, -h.carry.bias]).detach()) for h in enc.highways]
        self.proj = (enc.proj.weight.detach(), enc.proj.bias.detach())
        H = cfg.lstm_dim
        self.cells = []
        for stack in (bilm.forward_lm, bilm.backward_lm):
            layers = []
            for layer in stack.layers:
                # TF gate order (i, j, f, o) -> AllenNLP's (i, f, j, o); forget bias +1 folded in at load.
                order = torch.cat([torch.arange(0, H), torch.arange(2 * H, 3 * H), torch.arange(H, 2 * H),
                                   torch.arange(3 * H, 4 * H)])
                bias = layer.bias.detach().clone()
                bias[2 * H:3 * H] += 1.0
                layers.append((layer.input_weight.detach()[:, order].t().contiguous(),  # input_linearity (4H, in)
                               layer.recurrent_weight.detach()[:, order].t().contiguous(),  # state_linearity (4H, P)
                               bias[order].contiguous(),
                               layer.proj_weight.detach().t().contiguous()))  # state_projection (P, H)
            self.cells.append(layers)

    def char_cnn(self, ids):
        B, T, C = ids.shape
        x = F.embedding(ids.view(-1, C), self.char_embed).transpose(1, 2)  # every slot, padding too
        feats = [torch.relu(torch.max(F.conv1d(x, w, b), dim=-1)[0]) for w, b in self.convs]
        h = torch.cat(feats, dim=-1)
        for w, b in self.highways:
            nonlinear, gate = F.linear(h, w, b).chunk(2, dim=-1)
            gate = torch.sigmoid(gate)
            h = gate * h + (1 - gate) * torch.relu(nonlinear)
        return F.linear(h, *self.proj).view(B, T, -1)

    def cell(self, inputs, lengths, weights, forward):
        """LstmCellWithProjection.forward on rows sorted by length (descending)."""
        w_in, w_state, b_state, w_proj = weights
        B, T, _ = inputs.shape
        H, P = w_state.shape[0] // 4, w_proj.shape[0]
        cc, pc = self.cfg.cell_clip, self.cfg.proj_clip
        out = inputs.new_zeros(B, T, P)
        mem, state = inputs.new_zeros(B, H), inputs.new_zeros(B, P)
        cur = B - 1 if forward else 0
        steps = lengths[0]  # the packed sequence's length: the longest row
        for step in range(steps):
            index = step if forward else steps - step - 1
            if forward:
                while lengths[cur] <= index:
                    cur -= 1
            else:
                while cur < B - 1 and lengths[cur + 1] > index:
                    cur += 1
            prev_mem, prev_state = mem[:cur + 1].clone(), state[:cur + 1].clone()
            pi = F.linear(inputs[:cur + 1, index], w_in)
            ps = F.linear(prev_state, w_state, b_state)
            i = torch.sigmoid(pi[:, :H] + ps[:, :H])
            f = torch.sigmoid(pi[:, H:2 * H] + ps[:, H:2 * H])
            j = torch.tanh(pi[:, 2 * H:3 * H] + ps[:, 2 * H:3 * H])
            o = torch.sigmoid(pi[:, 3 * H:] + ps[:, 3 * H:])
            m = i * j + f * prev_mem
            if cc:
                m = torch.clamp(m, -cc, cc)
            h = F.linear(o * torch.tanh(m), w_proj)
            if pc:
                h = torch.clamp(h, -pc, pc)
            mem, state = mem.clone(), state.clone()
            mem[:cur + 1], state[:cur + 1] = m, h
            out[:cur + 1, index] = h
        return out

    def __call__(self, char_ids):
        mask = (char_ids > 0).any(-1)
        framed, fmask = self.bilm.add_sentence_boundaries(char_ids, mask)
        x = self.char_cnn(framed)  # (B, T+2, P)
        lengths = fmask.sum(1)
        order = torch.argsort(lengths, descending=True)
        xs, ls = x[order], lengths[order].tolist()
        layers = [torch.cat([xs, xs], -1)]
        fwd_in, bwd_in = xs, xs
        for k in range(self.cfg.n_layers):
            f = self.cell(fwd_in, ls, self.cells[0][k], True)
            b = self.cell(bwd_in, ls, self.cells[1][k], False)
            if k > 0 and self.cfg.use_skip_connections:
                f, b = f + fwd_in, b + bwd_in
            layers.append(torch.cat([f, b], -1))
            fwd_in, bwd_in = f, b
        stacked = torch.stack(layers, 1)[torch.argsort(order)]  # unsort
        T = char_ids.shape[1]
        return stacked[:, :, 1:T + 1] * mask[:, None, :, None]


def allennlp_variants(bilm, batches, chars, outputs: dict, wheel: Path, n_tokens: int) -> dict:
    """AllenNLP 2.10.1's ``_ElmoBiLm`` on ``bilm``'s weights, plain and with its vocabulary cache:
    name -> (run, tokens), each run storing (B, L+1, T, 2P) outputs like the other variants."""
    import tempfile

    if str(REPO) not in sys.path:  # run as a script: benchmarks/ itself is on the path
        sys.path.insert(0, str(REPO))
    from benchmarks.allennlp_reference import load
    elmo = load(wheel)
    vocab = ["@@PADDING@@", *sorted({w for b in batches for s in b for w in s})]  # row 0: padding
    with tempfile.TemporaryDirectory(prefix="bench-embed-allennlp-") as tmp:  # read at construction
        bilm.to_allennlp(tmp)
        options, weights = str(Path(tmp) / "options.json"), str(Path(tmp) / "lm_weights.hdf5")
        plain = elmo._ElmoBiLm(options, weights).eval()
        cached = elmo._ElmoBiLm(options, weights, vocab_to_cache=vocab).eval()  # word id = position in vocab
    with torch.no_grad():
        # Row 0 holds the CNN output of the string "@@PADDING@@"; AllenNLP then masks by nonzero
        # values (add_sentence_boundary_token_ids), so padding would count as tokens and change
        # the backward LM's outputs (by up to 1.1 here). A zero row gives its correct outputs.
        cached._word_embedding.weight[0] = 0
    index = {w: i for i, w in enumerate(vocab)}
    word_ids = [torch.tensor([[index[w] for w in s] + [0] * (c.shape[1] - len(s)) for s in b])
                for b, c in zip(batches, chars)]  # (B, T) each

    def layers(model, c, w=None):
        model._elmo_lstm.reset_states()  # stateless: every batch from zero states
        out = model(c, w)
        return torch.stack([elmo.remove_sentence_boundaries(a, out["mask"])[0] for a in out["activations"]], 1)

    def run_plain():
        with torch.inference_mode():
            outputs["allennlp-2.10.1"] = [layers(plain, c) for c in chars]

    def run_cached():
        with torch.inference_mode():
            outputs["allennlp-2.10.1-vocab-cache"] = [layers(cached, c, w) for c, w in zip(chars, word_ids)]

    return {"allennlp-2.10.1": (run_plain, n_tokens), "allennlp-2.10.1-vocab-cache": (run_cached, n_tokens)}


def provenance(args) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout.strip())
    except OSError:
        commit, dirty = "unknown", None
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.executable).name, *sys.argv]), "commit": commit, "dirty_tree": dirty,
            "device": f"cpu: {cpu}, {os.cpu_count()} logical cores", "torch": torch.__version__,
            "python": platform.python_version(), "threads": args.threads,
            "load_average_start": os.getloadavg()}


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from elmo_dist.data import batch_to_ids
    from elmo_dist.export import Embedder
    from elmo_dist.model import BiLM, preset

    meta = provenance(args)
    torch.manual_seed(0)
    bilm = BiLM(preset("small", vocab_size=0), stateful=False).eval()
    stream = ptb_batches(max(args.batches, args.stream_batches), args.batch_size)
    batches = stream[:args.batches]
    stream_tokens = sum(len(s) for b in stream for s in b)
    chars = [batch_to_ids(b) for b in batches]
    n_tokens = sum(len(s) for b in batches for s in b)
    baseline = AllenNLPStyle(bilm)
    n_base = args.baseline_batches or len(batches)
    base_tokens = sum(len(s) for b in batches[:n_base] for s in b)

    outputs = {}

    def run_baseline():
        with torch.inference_mode():
            outputs["allennlp-style"] = [baseline(c) for c in chars[:n_base]]

    def run_forward():
        with torch.inference_mode():
            outputs["bilm.forward"] = [bilm(c).layers for c in chars]

    embedder = {}

    def run_cold():
        embedder["e"] = Embedder(bilm)
        outputs["embedder-cold"] = [embedder["e"].embed(b)[0] for b in batches]

    def run_warm():
        outputs["embedder-warm"] = [embedder["e"].embed(b)[0] for b in batches]

    def run_warm_serial():
        embedder["e"].parallel = False
        outputs["embedder-warm-serial"] = [embedder["e"].embed(b)[0] for b in batches]
        embedder["e"].parallel = True

    def run_stream():
        fresh, kept = Embedder(bilm), []
        fresh.prefetch(s for b in stream for s in b)  # what `elmo-dist export` does per 10,000 lines
        for i, b in enumerate(stream):
            layers = fresh.embed(b)[0]
            if i < len(batches):  # compared with bilm.forward below; the rest is dropped
                kept.append(layers)
        outputs["embedder-stream"] = kept

    variants = {"allennlp-style": (run_baseline, base_tokens), "bilm.forward": (run_forward, n_tokens),
                "embedder-cold": (run_cold, n_tokens), "embedder-warm": (run_warm, n_tokens),
                "embedder-warm-serial": (run_warm_serial, n_tokens)}
    if args.stream_batches:
        variants["embedder-stream"] = (run_stream, stream_tokens)
    baseline_name = "allennlp-style"
    if args.allennlp_wheel:
        variants = {**allennlp_variants(bilm, batches, chars, outputs, args.allennlp_wheel, n_tokens), **variants}
        baseline_name = "allennlp-2.10.1"
    with torch.inference_mode():  # warm-up: first-call allocations, oneDNN primitive creation
        bilm(chars[0])
        baseline(chars[0][:4])
    times = {name: [] for name in variants}
    for r in range(args.repeats):
        for name, (fn, _) in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            print(f"repeat {r + 1}/{args.repeats} {name:28s} {variants[name][1] / times[name][-1]:9.0f} tokens/s",
                  flush=True)

    reference = outputs["bilm.forward"]
    results = {}
    for name, (_, tokens) in variants.items():
        median = statistics.median(times[name])
        diff = max(float((a - b).abs().max()) for a, b in zip(outputs[name], reference))
        results[name] = {"tokens_per_s": tokens / median, "seconds_median": median, "seconds_all": times[name],
                         "tokens": tokens, "max_abs_diff_vs_bilm_forward": diff}
    base = results[baseline_name]["tokens_per_s"]
    for r in results.values():
        r["speedup_vs_baseline"] = r["tokens_per_s"] / base
        r["ratio_vs_allennlp_1744"] = r["tokens_per_s"] / ALLENNLP_TOKENS_PER_S
    meta["load_average_end"] = os.getloadavg()
    payload = {"benchmark": "embed", "setup": {"preset": "small", "batch_size": args.batch_size,
                                               "batches": len(batches), "sentence_tokens": "20-30 (PTB train)",
                                               "stateless": True, "real_tokens": n_tokens,
                                               "stream_batches": args.stream_batches,
                                               "stream_real_tokens": stream_tokens if args.stream_batches else 0},
               "provenance": meta, "baseline": baseline_name,
               "allennlp_reference_tokens_per_s": ALLENNLP_TOKENS_PER_S, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"\n{'variant':28s} {'tokens/s':>9s} {'x ' + baseline_name:>17s} {'x 1744':>7s} {'max|diff|':>10s}")
    for name, r in results.items():
        print(f"{name:28s} {r['tokens_per_s']:9.0f} {r['speedup_vs_baseline']:17.2f} "
              f"{r['ratio_vs_allennlp_1744']:7.2f} {r['max_abs_diff_vs_bilm_forward']:10.2e}")
    print(f"load average start {meta['load_average_start']}, end {meta['load_average_end']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
