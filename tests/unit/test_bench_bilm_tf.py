"""benchmarks/bench_bilm_tf.py without TensorFlow: the preset -> bilm-tf options mapping, the
in-memory shim of bilm/training.py (on a stand-in string), the suite's registration, and the
one-line error when the TF interpreter is missing."""
import pytest

from benchmarks.bench_bilm_tf import bilm_tf_options, main, shim_training_source
from elmo_dist.cli.bench import DEFAULT_SUITES, SCRIPT_SUITES
from elmo_dist.model import preset


@pytest.mark.parametrize("name, dim, proj, n_filters, char_dim", [("tiny", 256, 64, 256, 8), ("small", 1024, 128, 2048, 16)])
def test_options_follow_the_preset(name, dim, proj, n_filters, char_dim):
    cfg = preset(name, vocab_size=10002)
    o = bilm_tf_options(cfg, 10002)
    assert (o["lstm"]["dim"], o["lstm"]["projection_dim"], o["lstm"]["n_layers"]) == (dim, proj, 2)
    assert o["lstm"]["use_skip_connections"] and o["lstm"]["cell_clip"] == o["lstm"]["proj_clip"] == 3.0
    cnn = o["char_cnn"]
    assert sum(n for _, n in cnn["filters"]) == n_filters and cnn["filters"] == cfg.filters
    assert (cnn["embedding"]["dim"], cnn["n_highway"], cnn["n_characters"]) == (char_dim, 1, 261)
    assert (o["batch_size"], o["unroll_steps"], o["n_negative_samples_batch"], o["n_tokens_vocab"]) == (32, 20, 8192, 10002)
    assert o["all_clip_norm_val"] == 10.0 and o["dropout"] == cfg.dropout and o["bidirectional"]


STAND_IN = """import os
import tensorflow as tf
import numpy as np

def train():
    with tf.Session(config=tf.ConfigProto(
            allow_soft_placement=True)) as sess:
        pass

def test():
    config = tf.ConfigProto(allow_soft_placement=True)
"""


def test_shim_swaps_the_import_and_sets_threads():
    out = shim_training_source(STAND_IN, 2, 1)
    assert "import tensorflow as tf\n" not in out
    assert "import tensorflow.compat.v1 as tf\ntf.disable_v2_behavior()\n" in out
    assert out.count("intra_op_parallelism_threads=2, inter_op_parallelism_threads=1") == 2
    compile(out, "training.py", "exec")


def test_shim_refuses_an_unexpected_file():
    with pytest.raises(ValueError, match="import tensorflow as tf"):
        shim_training_source("import numpy\n", 2, 1)
    with pytest.raises(ValueError, match="ConfigProto"):
        shim_training_source("import tensorflow as tf\n", 2, 1)


def test_registered_outside_the_default_suites():
    assert SCRIPT_SUITES["bilm-tf"] == "bench_bilm_tf" and "bilm-tf" not in DEFAULT_SUITES


def test_missing_tf_interpreter_is_one_line(tmp_path, capsys):
    assert main(["--tf-python", str(tmp_path / "nope" / "python")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no TensorFlow interpreter" in err and "\n" not in err
