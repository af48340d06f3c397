"""Sentence embeddings to HDF5 in the convention of AllenNLP's old ``elmo`` command.

    OUTPUT.hdf5
      "0", "1", ...        one float32 dataset per input line, key = 0-based line number:
                           --all (L+1, T, 2P), --top (T, 2P) the top layer, --average (T, 2P)
                           the mean of the L+1 layers
      "sentence_to_index"  shape (1,) string: JSON {sentence text: key}; a sentence that occurs on
                           several lines maps to its last line, as AllenNLP's map did

Lines end at ``\n`` only (``data.textio``: a lone ``\r`` stays inside its line as whitespace,
so key n is the n-th ``\n``-terminated line, as every other reader counts it). Lines are
tokenised by whitespace (pre-tokenised text) or an nltk tokenizer (``--tokenizer``).
Decisions, each counted in the returned :class:`ExportReport`:
  * a blank (or whitespace-only) line gets an empty dataset, (L+1, 0, 2P) or (0, 2P), so that
    every line number has a key; it is left out of ``sentence_to_index``;
  * a line of more than ``max_tokens`` tokens is cut to its first ``max_tokens`` tokens (the
    biLM has no length limit, but one huge line would make one huge batch).
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

import torch

from elmo_dist.data.textio import EncodingError, iter_lines, sniff_text_file

from .embedder import Embedder, batches_by_length

MODES = ("all", "top", "average")


@dataclass
class ExportReport:
    lines: int = 0
    """Lines read (= datasets written, sentence_to_index aside)."""
    sentences: int = 0
    """Non-blank lines embedded."""
    tokens: int = 0
    """Tokens embedded (after truncation)."""
    blank_lines: int = 0
    """Blank or whitespace-only lines: written as empty datasets."""
    truncated_lines: int = 0
    """Lines longer than max_tokens, cut to max_tokens."""
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
            text += f"; {self.blank_lines} blank lines written as empty datasets"
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


def _select(layers: torch.Tensor, mode: str) -> torch.Tensor:
    """(B, L+1, T, D) -> what ``mode`` writes: (B, L+1, T, D) or (B, T, D)."""
    if mode == "all":
        return layers
    if mode == "top":
        return layers[:, -1]
    return layers.mean(dim=1)


def export_sentences(embedder: Embedder, input_file: Path | str, output_file: Path | str, mode: str = "all",
                     tokenizer: Optional[Callable[[str], list]] = None, batch_size: int = 64,
                     max_batch_tokens: int = 4096, max_tokens: int = 1000, chunk_lines: int = 10_000,
                     progress: bool = True) -> ExportReport:
    """Embeds every line of ``input_file`` and writes ``output_file`` (see the module docstring)."""
    import h5py
    from tqdm import tqdm

    from elmo_dist.utils import atomic_path

    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
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
    if embedder.stateful:
        embedder.reset_state()
    report = ExportReport()
    sentence_to_index: dict[str, str] = {}
    empty_shape = ((embedder.n_layers,) if mode == "all" else ()) + (0, embedder.output_dim)
    start = time.time()
    bar = tqdm(total=count_lines(input_file), desc="export", unit="sent", disable=not progress,
               dynamic_ncols=True)

    def flush(fout, chunk: list[tuple[int, str, list]]) -> None:
        """Embeds and writes one chunk of (line number, text, tokens) (blank lines included)."""
        for line_no, text, tokens in chunk:
            if not tokens:
                fout.create_dataset(str(line_no), shape=empty_shape, dtype="float32")
        todo = [item for item in chunk if item[2]]
        embedder.prefetch(item[2] for item in todo)  # the chunk's new words, in large CNN batches
        if embedder.stateful:
            groups = [list(range(i, min(i + batch_size, len(todo)))) for i in range(0, len(todo), batch_size)]
        else:
            groups = batches_by_length([len(item[2]) for item in todo], batch_size, max_batch_tokens)
        for group in groups:
            layers, lengths = embedder.embed([todo[i][2] for i in group])
            selected = _select(layers, mode).float().cpu().numpy()
            n_tok = 0
            for b, i in enumerate(group):
                line_no, _, tokens = todo[i]
                n = len(tokens)
                data = selected[b, :, :n] if mode == "all" else selected[b, :n]
                fout.create_dataset(str(line_no), data=data)
                n_tok += n
            report.tokens += n_tok
            bar.update(len(group))
            elapsed = max(time.time() - start, 1e-9)
            bar.set_postfix(tok_s=f"{report.tokens / elapsed:.0f}", refresh=False)
        bar.update(len(chunk) - len(todo))

    with atomic_path(output_file) as tmp, h5py.File(tmp, "w") as fout:
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
                if len(tokens) > max_tokens:
                    report.truncated_lines += 1
                    report.tokens_dropped += len(tokens) - max_tokens
                    tokens = tokens[:max_tokens]
            chunk.append((line_no, text, tokens))
            if len(chunk) >= chunk_lines:
                flush(fout, chunk)
                chunk = []
        flush(fout, chunk)
        index = fout.create_dataset("sentence_to_index", (1,), dtype=h5py.string_dtype())
        index[0] = json.dumps(sentence_to_index, ensure_ascii=False)
        fout.attrs["mode"] = mode
        fout.attrs["stateful"] = embedder.stateful
    bar.close()
    report.seconds = time.time() - start
    report.cache = {"words": len(embedder.cache), "misses": embedder.cache.misses, "hits": embedder.cache.hits}
    return report
