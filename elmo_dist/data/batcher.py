"""bilm-tf style training windows: each batch row is one long token stream cut into windows.

Every kept line ``w1 ... wn`` of the corpus becomes ``<S> w1 ... wn </S>``; the stream of a
batch row is the concatenation of the lines of its byte region (see
:meth:`~elmo_dist.data.corpus.Corpus.iter_lines_between`), and window ``k`` of the row holds
stream positions ``[k*T, (k+1)*T)``. Because consecutive windows continue each other, the
model carries its LSTM state from one batch to the next along each row (the bilm-tf recipe),
and no token is padding except at the end of an evaluation pass.

Targets: the forward target of position ``p`` is the token at ``p+1``, the backward target the
token at ``p-1`` (across window edges: the batcher keeps one token of look-behind and one of
look-ahead per row). Two kinds are set to ``IGNORE_INDEX`` (-1): a forward target ``<S>`` (it
always follows ``</S>``) and a backward target ``</S>`` (it always precedes ``<S>``), both
trivially predictable. So a line of ``n`` words gives exactly ``n + 1`` targets per
direction, ``w1..wn, </S>`` forward and ``wn..w1, <S>`` backward: the count used for the
standard PTB perplexity. A literal ``<S>``/``</S>`` in the text is indistinguishable from a
boundary (same char ids, same vocab id), as in bilm-tf.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from elmo_dist.data.chars import BOS_TOKEN, EOS_TOKEN, MAX_WORD_LENGTH, CharIdCache
from elmo_dist.data.corpus import Corpus, SkipReport, split_regions
from elmo_dist.data.vocab import Vocabulary

IGNORE_INDEX = -1
"""Target value meaning "no target here"; the loss must ignore it."""

_STATE_FORMAT = "elmo_dist.WindowBatcher/1"


@dataclass
class Batch:
    """One window of every row. ``B`` rows, ``T = num_steps`` positions."""

    char_ids: torch.Tensor
    """LongTensor (B, T, 50): shifted ELMo char ids; a padding token is 50 zeros."""
    token_ids: torch.Tensor
    """LongTensor (B, T): vocabulary ids of the inputs; 0 at padding (see ``mask``)."""
    fwd_targets: torch.Tensor
    """LongTensor (B, T): id of the next token, or -1."""
    bwd_targets: torch.Tensor
    """LongTensor (B, T): id of the previous token, or -1."""
    mask: torch.Tensor
    """BoolTensor (B, T): True at real tokens, False at padding."""

    @property
    def num_tokens(self) -> int:
        return int(self.mask.sum())

    @property
    def num_targets(self) -> tuple[int, int]:
        """Targets that count in the loss: (forward, backward)."""
        return int((self.fwd_targets != IGNORE_INDEX).sum()), int((self.bwd_targets != IGNORE_INDEX).sum())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return Batch(*(getattr(self, n).to(device, non_blocking=non_blocking) for n in self.__dataclass_fields__))

    def pin_memory(self) -> Batch:
        return Batch(*(getattr(self, n).pin_memory() for n in self.__dataclass_fields__))


class _Row:
    """Reading state of one batch row."""

    __slots__ = ("start", "end", "offset", "buffer", "head", "prev", "passes", "done", "lines", "from_start", "got_line")

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        self.offset = start  # where the reader resumes: the start of the next unread line
        self.buffer: list[str] = []  # tokens read; buffer[head:] are not yet consumed as input
        # A read index instead of deleting consumed tokens: a 100k-token line cut into windows
        # of 20 would otherwise shift the list 5k times (quadratic). Compacted on each read.
        self.head = 0
        self.prev: str | None = None  # last consumed input (look-behind for the next window)
        self.passes = 0  # completed passes over the region
        self.done = False  # eval only: the region is read to its end
        self.lines: Iterator[tuple[int, list[str]]] | None = None
        self.from_start = False  # the current reader began at the region start...
        self.got_line = False  # ...and has produced a line (else the region is empty)


class WindowBatcher:
    """Windows of ``num_steps`` tokens for ``batch_size`` rows that each own a corpus region.

    ``[0, corpus.total_bytes)`` is split into ``total_rows`` (default ``batch_size``) equal
    byte regions; this batcher serves rows ``row_start .. row_start + batch_size - 1`` (rank
    ``k`` of ``world`` takes ``row_start=k*B, total_rows=world*B``), so rows and ranks read
    disjoint lines.

    ``loop=True`` (training): a row that reaches the end of its region wraps to the region
    start, and iteration never ends. ``epoch`` is the number of passes that *every* row of
    this batcher has completed (the minimum over rows; regions hold equal bytes, so rows
    finish passes at nearly the same step). A row whose region holds no line makes the
    constructor raise ``ValueError``.

    ``loop=False`` (evaluation): an exhausted row yields padding (mask False, targets -1),
    and iteration stops once every row is exhausted, so every target is produced once.
    ``max_passes=E`` (training by epochs): as ``loop=True``, but a row that has read its region
    E times yields padding, and iteration stops once every row has: every target exactly E times.

    Iterating again continues where the last iteration stopped; :meth:`reset` starts over.
    :meth:`state_dict` / :meth:`load_state_dict` save and restore the position exactly.
    """

    def __init__(
        self,
        corpus: Corpus,
        vocab: Vocabulary,
        batch_size: int,
        num_steps: int,
        *,
        row_start: int = 0,
        total_rows: int | None = None,
        loop: bool = True,
        char_cache: CharIdCache | None = None,
        max_passes: int | None = None,
    ) -> None:
        for name, value in (("batch_size", batch_size), ("num_steps", num_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        total_rows = batch_size if total_rows is None else total_rows
        if not (0 <= row_start and row_start + batch_size <= total_rows):
            raise ValueError(
                f"rows {row_start}..{row_start + batch_size - 1} do not fit in total_rows={total_rows}: "
                "need 0 <= row_start and row_start + batch_size <= total_rows"
            )
        self.corpus = corpus
        self.vocab = vocab
        self.batch_size = batch_size
        self.num_steps = num_steps
        self.row_start = row_start
        self.total_rows = total_rows
        self.loop = loop
        if max_passes is not None and (not loop or max_passes < 1):
            raise ValueError(f"max_passes needs loop=True and must be >= 1; got {max_passes!r} (loop={loop})")
        self.max_passes = max_passes
        self.char_cache = char_cache if char_cache is not None else CharIdCache()
        self.regions = split_regions(corpus.total_bytes, total_rows)[row_start : row_start + batch_size]
        self.report = SkipReport()
        self._rows = [_Row(s, e) for s, e in self.regions]
        if loop:
            for r, row in enumerate(self._rows):
                if next(self._reader(row.start, row.end, SkipReport()), None) is None:
                    raise self._too_small(r)

    def _too_small(self, r: int) -> ValueError:
        start, end = self.regions[r]
        path, local = self.corpus.locate(start) if start < self.corpus.total_bytes else (self.corpus.files[-1], 0)
        where = f"row {self.row_start + r} gets bytes {local}-{local + end - start} of {path}"
        if start < self.corpus.total_bytes and self.corpus.inside_long_line(start):
            why = (f"{where}, inside a line over --max-line-bytes ({self.corpus.max_line_bytes}) that is skipped "
                   "but keeps its bytes; split or remove such lines, or")
        else:
            why = f"{where} and no usable line starts there;"
        return ValueError(
            f"corpus too small or too uneven for {self.total_rows} batch rows: {why} lower --batch-size "
            "(or the number of ranks), or use a larger corpus"
        )

    def _reader(self, offset: int, end: int, report: SkipReport) -> Iterator[tuple[int, list[str]]]:
        # A line can run past its region's end, so a saved offset may lie beyond it.
        return self.corpus.iter_lines_between(offset, end, report) if offset <= end else iter(())

    @property
    def epoch(self) -> int:
        """Passes completed by every row of this batcher (training); 0 or 1 in evaluation."""
        return min(row.passes for row in self._rows)

    @property
    def finished(self) -> bool:
        """Every row has read its region ``max_passes`` times (training) or once (evaluation)."""
        return all(row.done and len(row.buffer) == row.head for row in self._rows)

    def passes_done(self) -> float:
        """Passes completed, as a fraction: the slowest row's passes plus the share of its region
        read in its current pass (byte offsets; for progress bars)."""
        def progress(row: _Row) -> float:
            if row.done:
                return float(row.passes)
            span = max(row.end - row.start, 1)
            return row.passes + min(max(row.offset - row.start, 0), span) / span
        return min(progress(row) for row in self._rows)

    def padding_batch(self) -> Batch:
        """A window of padding only (mask False, every target -1): what a rank whose rows have
        finished their passes trains on while another rank's rows still read, so that every
        rank keeps taking part in the collectives of each step."""
        B, T = self.batch_size, self.num_steps
        none = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
        return Batch(torch.zeros(B, T, MAX_WORD_LENGTH, dtype=torch.long), torch.zeros(B, T, dtype=torch.long),
                     none, none.clone(), torch.zeros(B, T, dtype=torch.bool))

    def reset(self) -> None:
        """Start every row over at its region start, with a fresh report."""
        self.report = SkipReport()
        self._rows = [_Row(s, e) for s, e in self.regions]

    def _pull(self, r: int, row: _Row) -> bool:
        """Append the next line of row ``r`` to its buffer; False once an eval row is exhausted."""
        while True:
            if row.lines is None:
                row.lines = self._reader(row.offset, row.end, self.report)
                row.from_start, row.got_line = row.offset == row.start, False
            item = next(row.lines, None)
            if item is not None:
                row.offset, tokens = item
                row.got_line = True
                buf = row.buffer
                if row.head:
                    del buf[: row.head]  # O(remaining) <= O(T): reads happen when few are left
                    row.head = 0
                buf.append(BOS_TOKEN)
                buf.extend(tokens)
                buf.append(EOS_TOKEN)
                return True
            row.lines = None
            if row.from_start and not row.got_line and self.loop:
                raise self._too_small(r)  # the files changed under us: never spin forever
            row.passes += 1
            if not self.loop or (self.max_passes is not None and row.passes >= self.max_passes):
                row.done = True
                return False
            row.offset = row.start

    def next_batch(self) -> Batch | None:
        """The next window of every row, or None when evaluation is over."""
        T, B = self.num_steps, self.batch_size
        words: list[str | None] = []  # B*T inputs, None at padding
        lengths: list[int] = []  # real inputs per row
        prevs: list[str | None] = []  # look-behind per row
        nexts: list[str | None] = []  # look-ahead per row
        for r, row in enumerate(self._rows):
            buf = row.buffer
            while len(buf) - row.head <= T and not row.done and self._pull(r, row):
                pass
            h = row.head  # _pull may have compacted the buffer
            n = min(len(buf) - h, T)
            words.extend(buf[h : h + n])
            if n < T:
                words.extend([None] * (T - n))
            lengths.append(n)
            prevs.append(row.prev)
            nexts.append(buf[h + T] if len(buf) - h > T else None)
        if not any(lengths):
            return None
        for row, n in zip(self._rows, lengths):
            if n:
                row.head += n
                row.prev = row.buffer[row.head - 1]

        # The only per-token Python work: two dict lookups (vocab id, char-id row).
        get, unk = self.vocab.index.get, self.vocab.unk_id
        ids = np.array([get(w, unk) for w in words], dtype=np.int64).reshape(B, T)  # (B, T)
        char_ids = self.char_cache.ids(words).reshape(B, T, MAX_WORD_LENGTH)  # (B, T, 50)
        prev_ids = np.array([get(w, unk) for w in prevs], dtype=np.int64)  # (B,)
        next_ids = np.array([get(w, unk) for w in nexts], dtype=np.int64)  # (B,)
        has_prev = np.array([w is not None for w in prevs])  # (B,)
        has_next = np.array([w is not None for w in nexts])  # (B,)

        mask = np.arange(T)[None, :] < np.array(lengths)[:, None]  # (B, T)
        # Stream with one neighbour on each side: column j+1 holds input position j.
        ext = np.concatenate([prev_ids[:, None], ids, next_ids[:, None]], axis=1)  # (B, T+2)
        ext_ok = np.concatenate([has_prev[:, None], mask, has_next[:, None]], axis=1)  # (B, T+2)
        fwd = ext[:, 2:]  # (B, T)
        bwd = ext[:, :T]  # (B, T)
        fwd_ok = mask & ext_ok[:, 2:] & (fwd != self.vocab.bos_id)
        bwd_ok = mask & ext_ok[:, :T] & (bwd != self.vocab.eos_id)
        return Batch(
            char_ids=torch.from_numpy(char_ids),
            token_ids=torch.from_numpy(np.where(mask, ids, 0)),
            fwd_targets=torch.from_numpy(np.where(fwd_ok, fwd, IGNORE_INDEX)),
            bwd_targets=torch.from_numpy(np.where(bwd_ok, bwd, IGNORE_INDEX)),
            mask=torch.from_numpy(mask),
        )

    def __iter__(self) -> Iterator[Batch]:
        while True:
            batch = self.next_batch()
            if batch is None:
                return
            yield batch

    def state_dict(self) -> dict:
        """JSON-serialisable position: per row the next unread line and the unconsumed tokens.

        Take it between batches; a batcher built with the same corpus and arguments and given
        this state yields exactly the batches this one would yield next.
        """
        return {
            "format": _STATE_FORMAT,
            "batch_size": self.batch_size,
            "row_start": self.row_start,
            "total_rows": self.total_rows,
            "total_bytes": self.corpus.total_bytes,
            "loop": self.loop,
            "epoch": self.epoch,
            "rows": [
                {"offset": row.offset, "buffer": row.buffer[row.head :], "prev": row.prev, "passes": row.passes, "done": row.done}
                for row in self._rows
            ],
            "report": self.report.as_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a position saved by :meth:`state_dict` (``num_steps`` may differ)."""
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"not a WindowBatcher state (format {state.get('format')!r}, expected {_STATE_FORMAT!r})")
        for key in ("batch_size", "row_start", "total_rows", "loop"):
            if state[key] != getattr(self, key):
                raise ValueError(f"batcher state has {key}={state[key]!r} but this batcher has {getattr(self, key)!r}")
        if state["total_bytes"] != self.corpus.total_bytes:
            raise ValueError(
                f"batcher state was saved on a corpus of {state['total_bytes']} bytes, this one has "
                f"{self.corpus.total_bytes}: the corpus files changed, so the saved offsets are meaningless"
            )
        rows = []
        for (start, end), saved in zip(self.regions, state["rows"]):
            row = _Row(start, end)
            row.offset, row.buffer, row.prev = int(saved["offset"]), list(saved["buffer"]), saved["prev"]
            row.passes, row.done = int(saved["passes"]), bool(saved["done"])
            rows.append(row)
        self._rows = rows
        self.report = SkipReport.from_dict(state["report"])
