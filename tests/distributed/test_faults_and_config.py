"""The single-process parts of distributed training: world-size arithmetic, DeepSpeed config
files, re-splitting data positions for another number of ranks, the watchdog."""
import threading
import time
from pathlib import Path

import pytest

from elmo_dist.cli.pretrain import build_parser
from elmo_dist.data import Corpus, Vocabulary, WindowBatcher, count_words
from elmo_dist.data.corpus import split_regions
from elmo_dist.train import OptimConfig, TrainConfig
from elmo_dist.train.checkpoint import CheckpointError, resplit_data_states
from elmo_dist.train.distributed import (check_global_batch, config_precision, deepspeed_config, load_user_config,
                                         zero_stage)
from elmo_dist.train.faults import Watchdog, describe_collective_error

from ._launch import REPO, write_corpus

pytestmark = pytest.mark.timeout(60)


def test_global_batch_mismatch_names_every_factor_and_the_fix():
    train = TrainConfig(batch_size=32, grad_accum_steps=2)
    assert check_global_batch(train, 4) == 256
    assert check_global_batch(train, 4, {"train_batch_size": 256}) == 256
    with pytest.raises(ValueError) as e:
        check_global_batch(train, 4, {"train_batch_size": 512}, "ds.json")
    msg = str(e.value)
    for part in ("train_batch_size 512 in ds.json", "micro-batch 32 (--batch-size)", "gradient accumulation 2 (--grad-accum)",
                 "world size 4 (ranks) = 256", "pass --grad-accum 4"):
        assert part in msg, (part, msg)
    with pytest.raises(ValueError, match="divisible by 128"):
        check_global_batch(train, 4, {"train_batch_size": 500})
    with pytest.raises(ValueError, match="pass --batch-size 16"):
        check_global_batch(train, 4, {"train_micro_batch_size_per_gpu": 16})


@pytest.mark.parametrize("stage", [0, 1, 2])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_launch_configs(stage, precision):
    path = REPO / "launch" / f"ds_zero{stage}_{precision}.json"
    user = load_user_config(path)
    assert config_precision(user) == ("bf16" if precision == "bf16" else None)
    cfg = deepspeed_config(TrainConfig(batch_size=8, grad_accum_steps=3, precision=precision), OptimConfig(), user)
    assert zero_stage(cfg) == stage and cfg["train_batch_size"] == 24 and cfg["gradient_clipping"] == 10.0
    assert cfg.get("zero_allow_untested_optimizer", False) == (stage > 0)


@pytest.mark.parametrize("content, fix", [
    ('{"optimizer": {"type": "Adam"}}', "--optimizer"),
    ('{"fp16": {"enabled": true}}', "bf16"),
    ('{"bf16": {"enabled": true}}', "torch_autocast"),
    ('{"zero_optimization": {"stage": 3}}', "use 0, 1 or 2"),
    ('{"gradient_clipping": 1.0}', "--grad-clip"),
    ('{"zero_optimization": {"stage": 2,', "not valid JSON"),
])
def test_bad_deepspeed_configs_say_what_to_do(tmp_path, content, fix):
    path = tmp_path / "ds.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=fix):
        deepspeed_config(TrainConfig(), OptimConfig(), load_user_config(path))


def test_pretrain_accepts_the_deepspeed_launchers_local_rank():
    args = build_parser().parse_args(["--local_rank=1", "--run-dir", "r", "--deepspeed-config", "x.json"])
    assert args.deepspeed_config == Path("x.json") and args.comm_timeout == 600.0


@pytest.fixture
def corpus(tmp_path):
    c = Corpus([write_corpus(tmp_path / "train.txt", 400)])
    return c, Vocabulary.build(count_words(c))


def advanced_states(corpus, vocab, world, rows, steps):
    states = {}
    for rank in range(world):
        b = WindowBatcher(corpus, vocab, rows, 5, row_start=rank * rows, total_rows=world * rows)
        for _ in range(steps + rank):  # ranks a little apart, as they are after a crash
            b.next_batch()
        states[rank] = b.state_dict()
    return states


def fractions(states):
    out = []
    for s in (states[k] for k in sorted(states)):
        regions = split_regions(s["total_bytes"], s["total_rows"])[s["row_start"]:s["row_start"] + s["batch_size"]]
        out += [((r["offset"] - a) / (b - a), b - a) for (a, b), r in zip(regions, s["rows"])]
    return out


def test_resplit_two_ranks_onto_one_starts_rows_at_the_read_fraction(corpus):
    c, vocab = corpus
    old = advanced_states(c, vocab, world=2, rows=2, steps=7)
    fresh = WindowBatcher(c, vocab, 2, 5, row_start=0, total_rows=2)
    state = resplit_data_states(old, fresh.state_dict())
    old_f = fractions(old)
    # New row j is old rows 2j and 2j+1 (regions halve exactly): the overlap-weighted mean.
    for j, ((start, end), row) in enumerate(zip(split_regions(c.total_bytes, 2), state["rows"])):
        (f1, w1), (f2, w2) = old_f[2 * j], old_f[2 * j + 1]
        assert row["offset"] == start + round((f1 * w1 + f2 * w2) / (w1 + w2) * (end - start))
        assert row["buffer"] == [] and row["prev"] is None and row["passes"] == 0
    fresh.load_state_dict(state)
    batch = fresh.next_batch()  # starts at the next line start: a sentence boundary
    assert batch.num_tokens == 10 and all(t == "<S>" for t in [vocab.words[i] for i in batch.token_ids[:, 0].tolist()])


def test_resplit_one_rank_onto_three_and_missing_rank_is_an_error(corpus):
    c, vocab = corpus
    old = advanced_states(c, vocab, world=1, rows=3, steps=9)
    for rank in range(3):
        fresh = WindowBatcher(c, vocab, 1, 5, row_start=rank, total_rows=3).state_dict()
        new = resplit_data_states(old, fresh)
        assert abs(new["rows"][0]["offset"] - old[0]["rows"][rank]["offset"]) <= 1  # same regions: same place
    two = advanced_states(c, vocab, world=2, rows=2, steps=3)
    with pytest.raises(CheckpointError, match="data_rank"):
        resplit_data_states({0: two[0]}, WindowBatcher(c, vocab, 2, 5).state_dict())


def test_watchdog_ends_a_stalled_rank_but_not_a_slow_or_paused_one():
    fired = []
    done = threading.Event()

    def on_stall(message):
        fired.append(message)
        done.set()

    with Watchdog(0.4, rank=3, on_stall=on_stall, poll_s=0.02) as w:
        for i in range(10):  # beating every 0.1 s: never fires
            w.beat(f"training step {i}")
            time.sleep(0.1)
        w.pause("evaluating")
        time.sleep(0.6)
        assert not fired
        w.beat("training step 11")
        assert done.wait(5)
    assert len(fired) == 1 and "rank 3" in fired[0] and "training step 11" in fired[0] and "--resume" in fired[0]


def test_collective_failure_message_says_how_to_continue():
    msg = describe_collective_error(RuntimeError("[gloo] Connection closed by peer\nmore"), 1, 17, 12)
    assert msg.startswith("rank 1: lost contact") and "step 17" in msg and "--resume" in msg and "step 12" in msg
    assert "\n" not in msg
    assert "no checkpoint" in describe_collective_error(RuntimeError("x"), 0, 3, None)
