"""Learning-rate schedules: the values the formulas fix at their landmarks, and bad settings."""
import math

import pytest

from elmo_dist.train.schedule import learning_rate


def test_warm_up_is_linear_then_constant():
    rates = [learning_rate(0.4, s, "constant", warmup_steps=4) for s in range(8)]
    assert rates == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4, 0.4])


def test_cosine_landmarks():
    lr, warm, total, floor = 1e-3, 10, 110, 0.1
    at = lambda s: learning_rate(lr, s, "cosine", warm, total, floor)  # noqa: E731
    assert at(warm - 1) == pytest.approx(lr)  # the end of the warm-up is the peak
    assert at(warm) == pytest.approx(lr)  # t = 0
    assert at(warm + 50) == pytest.approx(lr * (floor + (1 - floor) / 2))  # t = 1/2: halfway to the floor
    assert at(total) == pytest.approx(lr * floor) and at(total + 100) == pytest.approx(lr * floor)
    decay = [at(s) for s in range(warm, total + 1)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def test_inverse_sqrt_halves_at_four_times_the_warm_up():
    assert learning_rate(0.2, 399, "inverse-sqrt", warmup_steps=100) == pytest.approx(0.1)
    assert learning_rate(0.2, 99, "inverse-sqrt", warmup_steps=100) == pytest.approx(0.2)
    assert learning_rate(0.2, 0, "inverse-sqrt") == pytest.approx(0.2)  # no warm-up: decays from step 1
    assert learning_rate(0.2, 3, "inverse-sqrt") == pytest.approx(0.2 / math.sqrt(4))


def test_bad_schedules_say_what_to_do():
    with pytest.raises(ValueError, match="cosine.*--max-steps"):
        learning_rate(1.0, 15, "cosine", warmup_steps=10, total_steps=None)
    with pytest.raises(ValueError, match="choose one of"):
        learning_rate(1.0, 5, "linear")


def test_pretrain_cli_refuses_cosine_without_a_step_budget():
    from elmo_dist.cli.pretrain import build_parser, config_from_args
    with pytest.raises(ValueError, match="--max-steps"):
        config_from_args(build_parser().parse_args(["--lr-schedule", "cosine", "--max-minutes", "5"]))
    cfg = config_from_args(build_parser().parse_args(["--lr-schedule", "cosine", "--max-steps", "50"]))
    assert (cfg.optim.schedule, cfg.train.max_steps) == ("cosine", 50)
