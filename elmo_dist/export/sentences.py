"""Sentence embeddings to HDF5 in the convention of AllenNLP's old ``elmo`` command.

    OUTPUT.hdf5
      "0", "1", ...        one float32 dataset per input line, key = 0-based line number:
                           --all (L+1, T, 2P), --top (T, 2P) the top layer, --average (T, 2P)
                           the mean of the L+1 layers; with sentence_vectors the mean of that
                           over the line's T tokens: (L+1, 2P) or (2P,) (see ``lines.py``)
      "sentence_to_index"  shape (1,) string: JSON {sentence text: key}; a sentence that occurs on
                           several lines maps to its last line, as AllenNLP's map did

Lines end at ``\n`` only (``data.textio``: a lone ``\r`` stays inside its line as whitespace,
so key n is the n-th ``\n``-terminated line, as every other reader counts it). Lines are
tokenised by whitespace (pre-tokenised text) or an nltk tokenizer (``--tokenizer``).
Decisions, each counted in the returned :class:`ExportReport`:
  * a blank (or whitespace-only) line gets an empty dataset, (L+1, 0, 2P) or (0, 2P), so that
    every line number has a key; it is left out of ``sentence_to_index``;
  * a line of more than ``max_tokens`` tokens is embedded in windows of ``max_tokens`` with the
    LSTM state carried from window to window (``long_lines="window"``, the default: the vectors
    of one pass over the whole line, one dataset of the full length, memory bounded by the
    window), or cut to its first ``max_tokens`` tokens (``long_lines="cut"``).
Sentences are embedded stateless by default (same sentence, same vectors, whatever its
neighbours), in batches of similar length read ``chunk_lines`` lines at a time; with
``stateful=True`` batches follow the file order and each batch row carries its LSTM state to
the next batch, as AllenNLP's ``ElmoEmbedder`` did. The file is written to a temporary name and
renamed when complete.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional

from .embedder import Embedder
from .lines import OutputSpec, embed_lines, empty_result

from elmo_dist.data.textio import EncodingError, iter_lines, sniff_text_file

LONG_LINES = ("window", "cut")


@dataclass
class ExportReport:
    lines: int = 0
    """Lines read (= datasets written, sentence_to_index aside)."""
    sentences: int = 0
    """Non-blank lines embedded."""
    tokens: int = 0
    """Tokens embedded (after truncation)."""
    blank_lines: int = 0
    """Blank or whitespace-only lines: written as empty datasets (zero vectors with sentence_vectors)."""
    windowed_lines: int = 0
    """Lines longer than max_tokens, embedded whole in windows of max_tokens (long_lines="window")."""
    truncated_lines: int = 0
    """Lines longer than max_tokens, cut to max_tokens (long_lines="cut")."""
    tokens_dropped: int = 0
    """Tokens removed by that truncation."""
    seconds: float = 0.0
    """Wall time of the export, reading and writing included."""
    cache: dict = field(default_factory=dict)
    """Token-embedding cache: words encoded by the CNN (misses) and tokens served from it (hits)."""

    def summary(self) -> str:
        rate = self.tokens / self.seconds if self.seconds else 0.0
        text = (f"{self.lines} lines: {self.sentences} sentences, {self.tokens} tokens in {self.seconds:.1f} s "
                f"({rate:.0f} tokens/s)")
        if self.blank_lines:
            text += f"; {self.blank_lines} blank lines written as empty datasets (zeros as sentence vectors)"
        if self.windowed_lines:
            text += f"; {self.windowed_lines} lines over max_tokens embedded whole in windows"
        if self.truncated_lines:
            text += (f"; {self.truncated_lines} lines over max_tokens truncated "
                     f"({self.tokens_dropped} tokens dropped)")
        return text

    def as_dict(self) -> dict:
        return asdict(self)


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        n = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        if f.tell() > 0:
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                n += 1
    return n


def _warm_up(embedder: Embedder, path: Path, tokenize, n_lines: int, batch_size: int, max_tokens: int) -> None:
    """Stateful: embeds the first ``n_lines`` non-blank lines (cut to max_tokens) in file-order
    batches, outputs discarded, so each row carries a state that has read text."""
    batch: list = []
    for line in iter_lines(path):
        if n_lines <= 0:
            break
        tokens = tokenize(line.strip())[:max_tokens] if line.strip() else []
        if not tokens:
            continue
        batch.append(tokens)
        n_lines -= 1
        if len(batch) == batch_size:
            embedder.embed(batch)
            batch = []
    if batch:
        embedder.embed(batch)


class _HDF5Store:
    """One dataset per line, key = the line number as a string (``lines.Store``)."""

    def __init__(self, fout):
        self.fout = fout

    def put(self, key, data) -> None:
        self.fout.create_dataset(str(key), data=data)

    def create(self, key, shape: tuple):
        return self.fout.create_dataset(str(key), shape=shape, dtype="float32")  # filled with zeros


def export_sentences(embedder: Embedder, input_file: Path | str, output_file: Path | str, mode: str = "all",
                     tokenizer: Optional[Callable[[str], list]] = None, batch_size: int = 64,
                     max_batch_tokens: int = 4096, max_tokens: int = 1000, chunk_lines: int = 10_000,
                     progress: bool = True, sentence_vectors: bool = False,
                     long_lines: str = "window", warm_up_batches: int = 0) -> ExportReport:
    """Embeds every line of ``input_file`` and writes ``output_file`` (see the module docstring).

    ``warm_up_batches`` (stateful only): the first N batches of the file are embedded once and
    discarded before the export, so that each row's first real batch starts from a state that
    has read text rather than from zeros.
    """
    import h5py
    from tqdm import tqdm

    from elmo_dist.utils import atomic_path

    spec = OutputSpec(mode, sentence_vectors)
    if long_lines not in LONG_LINES:
        raise ValueError(f"long_lines must be one of {LONG_LINES}; got {long_lines!r}")
    for name, value in (("batch_size", batch_size), ("max_tokens", max_tokens), ("chunk_lines", chunk_lines)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1; got {value}")
    input_file, output_file = Path(input_file), Path(output_file)
    if input_file.exists() and not input_file.is_file():
        raise ValueError(f"{input_file}: not a regular file; give a text file, one sentence per line")
    if not input_file.is_file():
        raise FileNotFoundError(f"{input_file}: input file not found")
    if sniff_text_file(input_file) == "binary":
        raise EncodingError(f"{input_file}: not a text file (it holds NUL bytes); give a UTF-8 file, one sentence per line")
    tokenize = tokenizer or str.split
    if warm_up_batches < 0 or (warm_up_batches and not embedder.stateful):
        raise ValueError(f"warm_up_batches must be >= 0 and needs a stateful embedder; got {warm_up_batches}")
    if embedder.stateful:
        embedder.reset_state()
        _warm_up(embedder, input_file, tokenize, warm_up_batches * batch_size, batch_size, max_tokens)
    report = ExportReport()
    sentence_to_index: dict[str, str] = {}
    empty = empty_result(spec, embedder.n_layers, embedder.output_dim)
    window = max_tokens if long_lines == "window" else None
    start = time.time()
    bar = tqdm(total=count_lines(input_file), desc="export", unit="sent", disable=not progress,
               dynamic_ncols=True)

    def flush(store: _HDF5Store, chunk: list[tuple[int, str, list]]) -> None:
        """Embeds and writes one chunk of (line number, text, tokens) (blank lines included)."""
        for line_no, _, tokens in chunk:
            if not tokens:
                store.put(line_no, empty)
        todo = [(line_no, tokens) for line_no, _, tokens in chunk if tokens]
        embedder.prefetch(tokens for _, tokens in todo)  # the chunk's new words, in large CNN batches

        def on_batch(n_lines: int, n_tokens: int) -> None:
            report.tokens += n_tokens
            bar.update(n_lines)
            bar.set_postfix(tok_s=f"{report.tokens / max(time.time() - start, 1e-9):.0f}", refresh=False)

        embed_lines(embedder, todo, spec, store, batch_size, max_batch_tokens, window, on_batch)
        bar.update(len(chunk) - len(todo))

    with atomic_path(output_file) as tmp, h5py.File(tmp, "w") as fout:
        store = _HDF5Store(fout)
        chunk: list[tuple[int, str, list]] = []
        for line_no, line in enumerate(iter_lines(input_file)):
            text = line.strip()
            tokens = tokenize(text) if text else []
            report.lines += 1
            if not tokens:
                report.blank_lines += 1
            else:
                report.sentences += 1
                sentence_to_index[text] = str(line_no)
                if len(tokens) > max_tokens and window is not None:
                    report.windowed_lines += 1
                elif len(tokens) > max_tokens:
                    report.truncated_lines += 1
                    report.tokens_dropped += len(tokens) - max_tokens
                    tokens = tokens[:max_tokens]
            chunk.append((line_no, text, tokens))
            if len(chunk) >= chunk_lines:
                flush(store, chunk)
                chunk = []
        flush(store, chunk)
        index = fout.create_dataset("sentence_to_index", (1,), dtype=h5py.string_dtype())
        index[0] = json.dumps(sentence_to_index, ensure_ascii=False)
        fout.attrs["mode"] = mode
        fout.attrs["sentence_vectors"] = sentence_vectors
        fout.attrs["stateful"] = embedder.stateful
    bar.close()
    report.seconds = time.time() - start
    report.cache = {"words": len(embedder.cache), "misses": embedder.cache.misses, "hits": embedder.cache.hits}
    return report
