"""CPU benchmark: training throughput of elmo-dist against bilm-tf (the original ELMo trainer), one run.

bilm-tf side: its own ``bilm.training.train()`` (graph, Adagrad 0.2 with initial accumulator 1,
global-norm clip 10, sampled softmax, LSTM states carried between batches) fed by its own
``BidirectionalLMDataset`` over PTB train. Its code is read from the installed ``bilm`` 0.1.post5
distribution at run time and run unchanged but for two in-memory substitutions (nothing of it
is committed here): ``import tensorflow.compat.v1 as tf; tf.disable_v2_behavior()`` in place of
``import tensorflow as tf``, and thread counts added to its ``tf.ConfigProto``. It runs in a
long-lived worker under a separate interpreter (``--tf-python``: a venv holding
tensorflow-cpu 2.20.0 and tf-keras 2.20.1, with ``TF_USE_LEGACY_KERAS=1`` and
``TF_ENABLE_ONEDNN_OPTS=1``), so TensorFlow never enters the project's environment. The worker
hands train() a data object whose batch generator waits for the parent's go between rounds and
times every batch request: a step is one pass of train()'s loop (its batch, its ``sess.run``).

elmo-dist side: the step ``elmo-dist pretrain`` runs, as benchmarks/bench_train.py builds it
(WindowBatcher windows, BiLM, DeepSpeed engine, Adagrad 0.2, clip 10), twice: full softmax and
adaptive softmax. Same sizes (the preset mapped to bilm-tf's options by ``bilm_tf_options``),
batch 32, window 20, PTB train vocabulary (written by elmo-dist, read by bilm-tf), dropout 0.1,
``--threads`` threads each (torch.set_num_threads; TF intra-op N, inter-op 1).

Per size: a warm-up round (``--warmup`` steps per variant, not counted), then ``--rounds``
rounds, each ``--steps`` steps of bilm-tf, then of elmo-dist full, then of elmo-dist adaptive,
so a change of machine load hits all three within a minute. tokens/s = 32 x 20 x steps / round
time; the median over rounds is reported with min/max, and the ratio elmo-dist / bilm-tf both
as the ratio of medians and per round.

    python3 -m venv /work/tfenv
    /work/tfenv/bin/pip install tensorflow-cpu==2.20.0 bilm==0.1.post5
    /work/tfenv/bin/pip install --no-deps tf-keras==2.20.1
    python benchmarks/bench_bilm_tf.py --tf-python /work/tfenv/bin/python [--sizes tiny small]
        [--rounds 3] [--steps 20] [--warmup 3] [--threads 2] [--out FILE]

This file must import under the TF interpreter too (``--worker``), which has neither torch nor
elmo_dist: those are imported inside the functions of the parent side only.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
B, T = 32, 20
SAMPLED_SOFTMAX = 8192  # bilm-tf's n_negative_samples_batch
BILM_VERSION = "0.1.post5"
TF_IMPORT = "import tensorflow as tf\n"
TF_COMPAT_IMPORT = "import tensorflow.compat.v1 as tf\ntf.disable_v2_behavior()\n"
CONFIG_PROTO = re.compile(r"tf\.ConfigProto\(\s*allow_soft_placement=True\)")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tf-python", default=os.environ.get("ELMO_BENCH_TF_PYTHON", "/work/tfenv/bin/python"),
                   help="interpreter of the TensorFlow venv (default $ELMO_BENCH_TF_PYTHON or /work/tfenv/bin/python)")
    p.add_argument("--sizes", nargs="+", default=["tiny", "small"], help="elmo-dist presets (default tiny small)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per size (default 3)")
    p.add_argument("--steps", type=int, default=20, help="steps per variant per round (default 20)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps per variant before the rounds (default 3)")
    p.add_argument("--threads", type=int, default=2, help="threads per side (default 2)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "cpu" / "bilm_tf.json",
                   help="JSON results path")
    p.add_argument("--worker", type=Path, default=None, help=argparse.SUPPRESS)  # the TF side: its job file
    return p.parse_args(argv)


# ----------------------------------------------------------------------------- shared helpers
def bilm_tf_options(cfg, n_vocab: int, batch_size: int = B, unroll_steps: int = T,
                    n_negative_samples: int = SAMPLED_SOFTMAX) -> dict:
    """bilm-tf's training options for an elmo-dist ``ModelConfig`` (sizes, clips, dropout).
    bilm-tf trains with 261 character ids (0-260, padding 260); elmo-dist's AllenNLP-style ids
    shift them by one to keep 0 for padding (262 rows), which changes nothing in the compute."""
    if cfg.n_characters != 262:
        raise ValueError(f"ModelConfig.n_characters is {cfg.n_characters}; the bilm-tf mapping assumes 262 (its 261 + 1)")
    return {"bidirectional": True,
            "char_cnn": {"activation": cfg.activation, "embedding": {"dim": cfg.char_embed_dim},
                         "filters": [list(f) for f in cfg.filters], "max_characters_per_token": cfg.max_characters_per_token,
                         "n_characters": cfg.n_characters - 1, "n_highway": cfg.n_highway},
            "dropout": cfg.dropout,
            "lstm": {"cell_clip": cfg.cell_clip, "dim": cfg.lstm_dim, "n_layers": cfg.n_layers,
                     "proj_clip": cfg.proj_clip, "projection_dim": cfg.projection_dim,
                     "use_skip_connections": cfg.use_skip_connections},
            "all_clip_norm_val": 10.0, "n_epochs": 1, "n_train_tokens": 10 ** 12, "batch_size": batch_size,
            "n_tokens_vocab": n_vocab, "unroll_steps": unroll_steps, "n_negative_samples_batch": n_negative_samples}


def shim_training_source(source: str, intra_threads: int, inter_threads: int) -> str:
    """bilm/training.py with tf.compat.v1 in place of the TF 1 import and thread counts in each
    ``tf.ConfigProto``; raises if the file does not hold what the substitutions expect."""
    if source.count(TF_IMPORT) != 1:
        raise ValueError("bilm/training.py: expected one `import tensorflow as tf` line; is it bilm 0.1.post5?")
    source = source.replace(TF_IMPORT, TF_COMPAT_IMPORT)
    threads = (f"tf.ConfigProto(allow_soft_placement=True, intra_op_parallelism_threads={intra_threads}, "
               f"inter_op_parallelism_threads={inter_threads})")
    source, n = CONFIG_PROTO.subn(threads, source)
    if n == 0:
        raise ValueError("bilm/training.py: no tf.ConfigProto(allow_soft_placement=True) to add thread counts to")
    return source


def spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "per_round": values}


# ----------------------------------------------------------------------------- TF worker
def _load_bilm(intra: int, inter: int):
    """bilm.data and the shimmed bilm.training, executed from the installed distribution's files
    (its __init__, which pulls in the TF 1 inference code, is not run)."""
    import importlib.metadata
    import types
    dist = importlib.metadata.distribution("bilm")
    if dist.version != BILM_VERSION:
        print(f"bench_bilm_tf: bilm {dist.version} installed; measured setup is {BILM_VERSION}", file=sys.stderr)
    package = types.ModuleType("bilm")
    package.__path__ = []
    sys.modules["bilm"] = package
    modules = {}
    for name in ("data", "training"):
        path = Path(dist.locate_file(f"bilm/{name}.py"))
        source = path.read_text(encoding="utf-8")
        if name == "training":
            source = shim_training_source(source, intra, inter)
        module = types.ModuleType(f"bilm.{name}")
        module.__file__, module.__package__ = str(path), "bilm"
        sys.modules[module.__name__] = module
        setattr(package, name, module)
        exec(compile(source, str(path), "exec"), module.__dict__)
        modules[name] = module
    return modules["data"], modules["training"], dist.version


class _GatedData:
    """The ``data`` argument of bilm-tf's train(): its BidirectionalLMDataset's batches, released
    ``n`` at a time on the parent's ``run n``; the time of every batch request is recorded, so a
    step is one iteration of train()'s loop. ``stop`` ends the generator, and so train()."""

    def __init__(self, dataset, commands, report, on_ready):
        self.dataset, self.commands, self.report, self.on_ready = dataset, commands, report, on_ready

    def iter_batches(self, batch_size, num_steps):
        batches = self.dataset.iter_batches(batch_size, num_steps)
        self.report(self.on_ready())
        while True:
            command = self.commands.readline().split()
            if not command or command[0] == "stop":
                return
            n, stamps = int(command[1]), [time.perf_counter()]
            for _ in range(n):
                batch = next(batches)
                yield batch
                stamps.append(time.perf_counter())
            self.report({"steps": n, "seconds": stamps[-1] - stamps[0],
                         "step_seconds": [b - a for a, b in zip(stamps, stamps[1:])]})


def worker(job_path: Path) -> int:
    job = json.loads(job_path.read_text(encoding="utf-8"))
    protocol = os.fdopen(os.dup(1), "w")  # results go here; bilm-tf's and TF's prints go to stderr
    os.dup2(2, 1)
    data, training, bilm_version = _load_bilm(job["threads"], 1)
    tf = training.tf
    vocab = data.UnicodeCharsVocabulary(job["vocab"], job["options"]["char_cnn"]["max_characters_per_token"])
    dataset = data.BidirectionalLMDataset(job["train"], vocab, test=False, shuffle_on_load=False)

    def report(message):
        protocol.write(json.dumps(message) + "\n")
        protocol.flush()

    def ready():
        import numpy as np
        params = int(sum(np.prod(v.get_shape().as_list()) for v in tf.trainable_variables()))
        return {"ready": True, "tensorflow": tf.__version__, "bilm": bilm_version, "numpy": np.__version__,
                "python": sys.version.split()[0], "trainable_params": params, "vocab_size": vocab.size,
                "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS"), "legacy_keras": os.environ.get("TF_USE_LEGACY_KERAS")}

    with tempfile.TemporaryDirectory() as save_dir:
        training.train(job["options"], _GatedData(dataset, sys.stdin, report, ready), 1, save_dir, save_dir)
    report({"done": True})
    return 0


# ----------------------------------------------------------------------------- parent side
class BilmTfSide:
    """The TF worker for one size: started, graph built, then ``run(n)`` rounds."""

    def __init__(self, tf_python: str, options: dict, vocab_file: Path, train_file: Path, threads: int, tmp: Path):
        job = tmp / f"job_{options['lstm']['dim']}.json"
        job.write_text(json.dumps({"options": options, "vocab": str(vocab_file), "train": str(train_file),
                                   "threads": threads}), encoding="utf-8")
        env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_ENABLE_ONEDNN_OPTS": "1", "TF_CPP_MIN_LOG_LEVEL": "2",
               "CUDA_VISIBLE_DEVICES": ""}
        self.log = open(tmp / f"worker_{options['lstm']['dim']}.log", "w")
        self.proc = subprocess.Popen([tf_python, str(Path(__file__).resolve()), "--worker", str(job)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        self.info = self._read()
        if not self.info.get("ready"):
            raise RuntimeError(f"bilm-tf worker did not start: {self.info}")

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.flush()
            tail = Path(self.log.name).read_text(encoding="utf-8", errors="replace").strip().splitlines()[-5:]
            raise RuntimeError(f"bilm-tf worker exited ({self.proc.returncode}): {' | '.join(tail)}")
        return json.loads(line)

    def run(self, n: int) -> float:
        self.proc.stdin.write(f"run {n}\n")
        self.proc.stdin.flush()
        return self._read()["seconds"]

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("stop\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


class ElmoDistSide:
    """``elmo-dist pretrain``'s training step: benchmarks/bench_train.py's ``TrainStep``."""

    def __init__(self, cfg, corpus, vocab):
        from benchmarks.bench_train import TrainStep  # torch and pytest: the parent side only
        self.step = TrainStep(cfg, corpus, vocab)
        self.bilm, self.params = self.step.bilm, self.step.params

    def run(self, n: int) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            self.step.run(self.step.next_batch())
        return time.perf_counter() - t0


def bench_size(name: str, args, corpus, vocab, vocab_file: Path, train_file: Path, tmp: Path) -> dict:
    from elmo_dist.model import preset
    full_cfg = preset(name, vocab_size=len(vocab))
    options = bilm_tf_options(full_cfg, len(vocab))
    load_start = list(os.getloadavg())
    tf_side = BilmTfSide(args.tf_python, options, vocab_file, train_file, args.threads, tmp)
    try:
        sides = {"bilm-tf": tf_side, "elmo-dist-full": ElmoDistSide(full_cfg, corpus, vocab),
                 "elmo-dist-adaptive": ElmoDistSide(preset(name, vocab_size=len(vocab), softmax="adaptive"), corpus, vocab)}
        for side in sides.values():
            side.run(args.warmup)
        seconds = {k: [] for k in sides}
        for r in range(args.rounds):
            for k, side in sides.items():
                seconds[k].append(side.run(args.steps))
            print(f"  {name} round {r + 1}/{args.rounds}: " + ", ".join(
                f"{k} {B * T * args.steps / s[-1]:,.0f} tokens/s" for k, s in seconds.items()), flush=True)
    finally:
        tf_side.close()
    tokens = B * T * args.steps
    rates = {k: [tokens / s for s in v] for k, v in seconds.items()}
    base = rates["bilm-tf"]
    variants = {}
    for k, v in rates.items():
        variants[k] = {"tokens_per_s": spread(v)}
        if k != "bilm-tf":
            variants[k]["ratio_vs_bilm_tf"] = statistics.median(v) / statistics.median(base)
            variants[k]["ratio_vs_bilm_tf_per_round"] = [a / b for a, b in zip(v, base)]
    info = tf_side.info
    variants["bilm-tf"]["trainable_params"] = info["trainable_params"]
    for k in ("elmo-dist-full", "elmo-dist-adaptive"):
        variants[k]["trainable_params"] = sides[k].params
    return {"preset": name, "bilm_tf_options": options, "variants": variants, "worker": info,
            "load_average_start": load_start, "load_average_end": list(os.getloadavg())}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        return worker(args.worker)
    if not Path(args.tf_python).is_file():
        print(f"bench_bilm_tf: no TensorFlow interpreter at {args.tf_python}; create it: python3 -m venv /work/tfenv && "
              "/work/tfenv/bin/pip install tensorflow-cpu==2.20.0 bilm==0.1.post5 && "
              "/work/tfenv/bin/pip install --no-deps tf-keras==2.20.1 (or pass --tf-python)", file=sys.stderr)
        return 2
    if min(args.rounds, args.steps, args.threads) < 1 or args.warmup < 0:
        print("bench_bilm_tf: --rounds, --steps and --threads must be >= 1, --warmup >= 0", file=sys.stderr)
        return 2
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import torch
    torch.set_num_threads(args.threads)
    from benchmarks.conftest import provenance
    from elmo_dist.data import Corpus, Vocabulary, count_words, ptb_paths
    from elmo_dist.train.rundir import cache_dir
    meta = provenance()
    meta["threads"] = args.threads
    meta["machine_note"] = ("shared 2-core machine: another engineer's jobs may run at the same time; the ratios "
                            "are measured side by side, round by round")
    train_file = ptb_paths(cache_dir() / "ptb")["train"]
    corpus = Corpus([train_file])
    vocab = Vocabulary.build(count_words(corpus))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.txt"
        vocab.save(vocab_file)
        for name in args.sizes:
            print(f"bench_bilm_tf: {name}, {args.rounds} rounds x {args.steps} steps per variant", flush=True)
            results.append(bench_size(name, args, corpus, vocab, vocab_file, Path(train_file), Path(tmp)))
    meta["load_average_end"] = list(os.getloadavg())
    if results:
        w = results[0]["worker"]
        meta["versions"].update({"tensorflow": w["tensorflow"], "bilm": w["bilm"], "tf_numpy": w["numpy"],
                                 "tf_python": w["python"]})
    payload = {"benchmark": "bilm_tf",
               "setup": {"batch_size": B, "window": T, "vocab_size": len(vocab), "corpus": "PTB train",
                         "rounds": args.rounds, "steps_per_round": args.steps, "warmup_steps": args.warmup,
                         "threads_per_side": args.threads, "tf_threads": {"intra_op": args.threads, "inter_op": 1},
                         "bilm_tf_softmax": f"sampled softmax of {SAMPLED_SOFTMAX}", "optimizer": "Adagrad 0.2, clip 10",
                         "onednn": "TF_ENABLE_ONEDNN_OPTS=1"},
               "provenance": meta, "results": results}
    from elmo_dist.utils import atomic_write_json
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, payload)
    for r in results:
        print(f"{r['preset']}: " + ", ".join(f"{k} {v['tokens_per_s']['median']:,.0f} tokens/s"
                                           + (f" (x{v['ratio_vs_bilm_tf']:.2f})" if "ratio_vs_bilm_tf" in v else "")
                                           for k, v in r["variants"].items()))
    print(f"load average start {meta['load_average']}, end {meta['load_average_end']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
