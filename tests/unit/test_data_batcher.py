"""WindowBatcher: windows, targets and carried state, checked against hand-written arrays."""
import json
import random
from collections import Counter

import pytest
import torch

from elmo_dist.data.batcher import IGNORE_INDEX, WindowBatcher
from elmo_dist.data.corpus import Corpus
from elmo_dist.data.vocab import Vocabulary

X = IGNORE_INDEX
WORDS = ["<S>", "</S>", "<UNK>", "a", "b", "c", "d", "e", "f", "g", "h"]
# ids:     0      1       2      3    4    5    6    7    8    9    10
VOCAB = Vocabulary(WORDS)

# Lines start at bytes 0, 4, 6, 12 of 16: with two rows ([0, 8) and [8, 16)) row 0 reads
# "a b", "c", "d e f" and row 1 reads "g h".
TEXT = b"a b\nc\nd e f\ng h\n"
# Stream of row 0: <S> a b </S> <S> c </S> <S> d e f </S>   (12 tokens)
ROW0 = [0, 3, 4, 1, 0, 5, 1, 0, 6, 7, 8, 1]
# Stream of row 1: <S> g h </S>
ROW1 = [0, 9, 10, 1]


def bos_chars():
    return [259, 257, 260] + [261] * 47


def word_chars(word):
    ids = [259] + [b + 1 for b in word.encode()] + [260]
    return ids + [261] * (50 - len(ids))


@pytest.fixture
def small(tmp_path):
    path = tmp_path / "small.txt"
    path.write_bytes(TEXT)
    return Corpus([path])


def rows_of(batch):
    return (
        batch.token_ids.tolist(), batch.fwd_targets.tolist(), batch.bwd_targets.tolist(), batch.mask.tolist()
    )


def test_eval_windows_two_rows(small):
    batches = list(WindowBatcher(small, VOCAB, batch_size=2, num_steps=4, loop=False))
    assert len(batches) == 3
    pad = [0, 0, 0, 0], [X, X, X, X], [X, X, X, X], [False] * 4
    expected = [
        # (token_ids, fwd_targets, bwd_targets, mask) for row 0 and row 1
        (([0, 3, 4, 1], [3, 4, 1, X], [X, 0, 3, 4], [True] * 4),
         ([0, 9, 10, 1], [9, 10, 1, X], [X, 0, 9, 10], [True] * 4)),
        (([0, 5, 1, 0], [5, 1, X, 6], [X, 0, 5, X], [True] * 4), pad),
        (([6, 7, 8, 1], [7, 8, 1, X], [0, 6, 7, 8], [True] * 4), pad),
    ]
    for k, (batch, (row0, row1)) in enumerate(zip(batches, expected)):
        tokens, fwd, bwd, mask = rows_of(batch)
        assert (tokens[0], fwd[0], bwd[0], mask[0]) == row0, f"window {k} row 0"
        assert (tokens[1], fwd[1], bwd[1], mask[1]) == row1, f"window {k} row 1"
        assert batch.char_ids.shape == (2, 4, 50) and batch.char_ids.dtype == torch.int64
        assert batch.mask.dtype == torch.bool
    assert batches[0].char_ids[0, 0].tolist() == bos_chars()
    assert batches[0].char_ids[0, 3].tolist() == [259, 258, 260] + [261] * 47
    assert batches[0].char_ids[1, 2].tolist() == word_chars("h")
    assert batches[2].char_ids[0, 0].tolist() == word_chars("d")
    assert batches[1].char_ids[1].eq(0).all()


def test_targets_per_sentence_and_trivial_ones_masked(small):
    batches = list(WindowBatcher(small, VOCAB, batch_size=2, num_steps=4, loop=False))
    fwd = torch.cat([b.fwd_targets for b in batches], dim=1)
    bwd = torch.cat([b.bwd_targets for b in batches], dim=1)
    # Lines of 2, 1, 3 words in row 0 and 2 in row 1: n + 1 targets per line and direction.
    assert (fwd[0] != X).sum() == 3 + 2 + 4 and (bwd[0] != X).sum() == 3 + 2 + 4
    assert (fwd[1] != X).sum() == 3 and (bwd[1] != X).sum() == 3
    assert not (fwd == 0).any(), "<S> is never a forward target"
    assert not (bwd == 1).any(), "</S> is never a backward target"


def test_unknown_words_map_to_unk(tmp_path):
    path = tmp_path / "u.txt"
    path.write_bytes(b"a zebra\n")
    (batch,) = WindowBatcher(Corpus([path]), VOCAB, batch_size=1, num_steps=4, loop=False)
    assert rows_of(batch) == ([[0, 3, 2, 1]], [[3, 2, 1, X]], [[X, 0, 3, 2]], [[True] * 4])
    assert batch.char_ids[0, 2].tolist() == word_chars("zebra")


def test_training_wraps_around_and_carries_state(small):
    # Row 0 of two: the lines "a b", "c", "d e f" only.
    batcher = WindowBatcher(small, VOCAB, batch_size=1, num_steps=5, total_rows=2)
    it = iter(batcher)
    # Stream positions 0-4, 5-9, 10-14 (the third window wraps: f </S> | <S> a b).
    expected = [
        ([0, 3, 4, 1, 0], [3, 4, 1, X, 5], [X, 0, 3, 4, X]),
        ([5, 1, 0, 6, 7], [1, X, 6, 7, 8], [0, 5, X, 0, 6]),
        ([8, 1, 0, 3, 4], [1, X, 3, 4, 1], [7, 8, X, 0, 3]),
    ]
    epochs = []
    for k, (tokens, fwd, bwd) in enumerate(expected):
        batch = next(it)
        assert rows_of(batch) == ([tokens], [fwd], [bwd], [[True] * 5]), f"window {k}"
        epochs.append(batcher.epoch)
    assert epochs == [0, 0, 1]
    # Further windows keep following the periodic stream.
    stream = [t for _, (tokens, _, _) in zip(range(3), expected) for t in tokens]
    for _ in range(7):
        stream += next(it).token_ids[0].tolist()
    assert stream == (ROW0 * 5)[: len(stream)]
    assert batcher.epoch == 4


def test_each_row_is_a_continuous_stream(small):
    batcher = WindowBatcher(small, VOCAB, batch_size=2, num_steps=3)
    it = iter(batcher)
    tokens, fwd, bwd = [[], []], [[], []], [[], []]
    for _ in range(8):
        batch = next(it)
        assert batch.mask.all()
        for r in range(2):
            tokens[r] += batch.token_ids[r].tolist()
            fwd[r] += batch.fwd_targets[r].tolist()
            bwd[r] += batch.bwd_targets[r].tolist()
    assert tokens[0] == (ROW0 * 2)[:24]
    assert tokens[1] == (ROW1 * 6)[:24]
    # Row 1 over 24 steps: (<S> g h </S>) x 6; targets cross window edges at 3, 6, 9, ...
    assert fwd[1] == [9, 10, 1, X] * 6
    assert bwd[1] == [X, 0, 9, 10] * 6


def test_corpus_too_small_for_rows(small):
    with pytest.raises(ValueError, match="too small or too uneven for 8 batch rows.*lower --batch-size"):
        WindowBatcher(small, VOCAB, batch_size=8, num_steps=4)
    # Evaluation: rows without lines are padding; every target still comes out once.
    batches = list(WindowBatcher(small, VOCAB, batch_size=8, num_steps=4, loop=False))
    fwd = torch.cat([b.fwd_targets for b in batches], dim=1)
    assert int((fwd != X).sum()) == 3 + 2 + 4 + 3
    assert int(sum(b.mask.sum() for b in batches)) == 16


@pytest.mark.parametrize(
    "kwargs, message",
    [({"batch_size": 0}, "batch_size"), ({"num_steps": 0}, "num_steps"),
     ({"row_start": 2, "total_rows": 3}, "total_rows"), ({"row_start": -1}, "row_start")],
)
def test_bad_arguments(small, kwargs, message):
    args = {"batch_size": 2, "num_steps": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        WindowBatcher(small, VOCAB, args.pop("batch_size"), args.pop("num_steps"), **args)


# ---- larger random corpus: exact coverage and resume ------------------------------------


def random_corpus(tmp_path, seed=0, num_files=3, num_lines=60):
    """Files of random lines (some blank, some invalid UTF-8); returns (corpus, kept lines)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(30)]
    kept, paths = [], []
    for f in range(num_files):
        chunks = []
        for _ in range(num_lines):
            roll = rng.random()
            if roll < 0.05:
                chunks.append(b"   \n")
            elif roll < 0.1:
                chunks.append(b"\xff\xfe w1\n")
            else:
                line = [rng.choice(words) for _ in range(rng.randint(1, 12))]
                kept.append(line)
                chunks.append(" ".join(line).encode() + b"\n")
        path = tmp_path / f"part{f}.txt"
        path.write_bytes(b"".join(chunks))
        paths.append(path)
    vocab = Vocabulary.build(Counter(w for line in kept for w in line), max_size=25)  # some <UNK>
    return Corpus(paths), kept, vocab


def pairs(batches):
    """Multisets of (input, forward target) and (input, backward target) id pairs."""
    fwd, bwd = Counter(), Counter()
    for b in batches:
        for tok, f, bk, m in zip(b.token_ids.flatten().tolist(), b.fwd_targets.flatten().tolist(),
                                 b.bwd_targets.flatten().tolist(), b.mask.flatten().tolist()):
            assert m or (f == X and bk == X and tok == 0)
            if f != X:
                fwd[tok, f] += 1
            if bk != X:
                bwd[tok, bk] += 1
    return fwd, bwd


@pytest.mark.parametrize("batch_size, num_steps", [(1, 7), (5, 4), (7, 20), (40, 3)])
def test_eval_yields_every_target_once(tmp_path, batch_size, num_steps):
    corpus, kept, vocab = random_corpus(tmp_path)
    batcher = WindowBatcher(corpus, vocab, batch_size, num_steps, loop=False)
    fwd, bwd = pairs(list(batcher))
    # Reference: each line <S> w1..wn </S> gives (<S>,w1) .. (wn,</S>) forward, (w1,<S>) .. (</S>,wn) backward.
    want_fwd, want_bwd = Counter(), Counter()
    for line in kept:
        stream = [vocab.bos_id] + [vocab.id(w) for w in line] + [vocab.eos_id]
        want_fwd.update(zip(stream[:-1], stream[1:]))
        want_bwd.update(zip(stream[1:], stream[:-1]))
    assert sum(want_fwd.values()) == sum(len(line) + 1 for line in kept)
    assert fwd == want_fwd
    assert bwd == want_bwd
    assert batcher.report.lines_read == len(kept)


def test_ranks_split_the_rows(tmp_path):
    corpus, kept, vocab = random_corpus(tmp_path, seed=1)
    whole = pairs(list(WindowBatcher(corpus, vocab, 6, 5, loop=False)))
    fwd, bwd = Counter(), Counter()
    for rank in range(3):
        f, b = pairs(list(WindowBatcher(corpus, vocab, 2, 5, row_start=2 * rank, total_rows=6, loop=False)))
        fwd += f
        bwd += b
    assert (fwd, bwd) == whole


def assert_same_batches(a, b, note):
    for name in ("char_ids", "token_ids", "fwd_targets", "bwd_targets", "mask"):
        assert torch.equal(getattr(a, name), getattr(b, name)), f"{note}: {name} differs"


@pytest.mark.parametrize("loop", [True, False])
def test_state_dict_round_trip_through_json(tmp_path, loop):
    corpus, _, vocab = random_corpus(tmp_path, seed=2, num_lines=20)
    original = WindowBatcher(corpus, vocab, 3, 6, loop=loop)
    seen = 0
    # Save at several points; a pass takes about 25 windows here, so later ones follow wraps.
    for stop in (0, 1, 7, 30, 60, 110):
        while seen < stop:
            original.next_batch()
            seen += 1
        state = json.loads(json.dumps(original.state_dict()))
        restored = WindowBatcher(corpus, vocab, 3, 6, loop=loop)
        restored.load_state_dict(state)
        assert restored.epoch == original.epoch
        for k in range(5):
            want, got = original.next_batch(), restored.next_batch()
            seen += 1
            if want is None:
                assert got is None
            else:
                assert_same_batches(want, got, f"saved after {stop} windows, {k} ahead")
        assert restored.report == original.report
        assert restored.epoch == original.epoch
    if loop:
        assert original.epoch >= 3


def test_load_state_dict_rejects_other_setups(small, tmp_path):
    state = WindowBatcher(small, VOCAB, 2, 4).state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        WindowBatcher(small, VOCAB, 1, 4).load_state_dict(state)
    with pytest.raises(ValueError, match="loop"):
        WindowBatcher(small, VOCAB, 2, 4, loop=False).load_state_dict(state)
    other = tmp_path / "other.txt"
    other.write_bytes(TEXT + b"more words\n")
    with pytest.raises(ValueError, match="corpus files changed"):
        WindowBatcher(Corpus([other]), VOCAB, 2, 4).load_state_dict(state)
    with pytest.raises(ValueError, match="format"):
        WindowBatcher(small, VOCAB, 2, 4).load_state_dict({"rows": []})


def test_reset_starts_over(small):
    batcher = WindowBatcher(small, VOCAB, 2, 4, loop=False)
    first = list(batcher)
    assert list(batcher) == []
    batcher.reset()
    again = list(batcher)
    assert len(again) == len(first)
    for a, b in zip(first, again):
        assert_same_batches(a, b, "after reset")


def expected_pairs(kept, vocab, times=1):
    """(input, target) multisets of ``times`` passes over the kept lines, built from the lines."""
    want_fwd, want_bwd = Counter(), Counter()
    for line in kept:
        stream = [vocab.bos_id] + [vocab.id(w) for w in line] + [vocab.eos_id]
        want_fwd.update(zip(stream[:-1], stream[1:]))
        want_bwd.update(zip(stream[1:], stream[:-1]))
    return Counter({k: v * times for k, v in want_fwd.items()}), Counter({k: v * times for k, v in want_bwd.items()})


def epoch_batches(batcher, resume_after=None):
    """Training batches until every row finished its passes (padding where next_batch is None);
    ``resume_after=k``: after k batches the position goes through JSON into a fresh batcher."""
    out, k = [], 0
    while not batcher.finished:
        out.append(batcher.next_batch() or batcher.padding_batch())
        k += 1
        if k == resume_after:
            state = json.loads(json.dumps(batcher.state_dict()))
            fresh = WindowBatcher(batcher.corpus, batcher.vocab, batcher.batch_size, batcher.num_steps,
                                  row_start=batcher.row_start, total_rows=batcher.total_rows,
                                  max_passes=batcher.max_passes)
            fresh.load_state_dict(state)
            batcher = fresh
    return out


@pytest.mark.parametrize("ranks,resume_after", [(1, None), (2, None), (2, 7), (3, 1)])
def test_epochs_yield_every_target_exactly_that_many_times(tmp_path, ranks, resume_after):
    corpus, kept, vocab = random_corpus(tmp_path, seed=3)
    fwd, bwd = Counter(), Counter()
    for rank in range(ranks):
        batcher = WindowBatcher(corpus, vocab, 2, 5, row_start=2 * rank, total_rows=2 * ranks, max_passes=2)
        f, b = pairs(epoch_batches(batcher, resume_after))
        fwd += f
        bwd += b
    assert (fwd, bwd) == expected_pairs(kept, vocab, times=2)


def test_padding_batch_and_passes_done(small):
    batcher = WindowBatcher(small, VOCAB, 2, 3, max_passes=1)
    pad = batcher.padding_batch()
    assert not pad.mask.any() and pad.num_targets == (0, 0) and pad.char_ids.shape == (2, 3, 50)
    seen = [batcher.passes_done()]
    while not batcher.finished:
        batcher.next_batch()
        seen.append(batcher.passes_done())
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
