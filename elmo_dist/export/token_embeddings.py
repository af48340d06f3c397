"""Context-independent token embeddings of a vocabulary: the character-CNN output per word.

As bilm-tf's ``dump_token_embeddings`` writes them (and AllenNLP's ``vocab_to_cache`` consumes
them), one row per vocabulary line:

    OUTPUT.hdf5
      "embedding"  float32 (V, P)   row i = token encoder output (layer 0, one half) of word i
      "words"      string (V,)      the words, in file order

The vocabulary file is UTF-8, one word per line (a bilm-tf vocabulary file works as it is:
``<S>`` and ``</S>`` get their boundary-character embeddings). Surrounding whitespace is
stripped; blank lines are skipped and counted. Written atomically.
"""
from __future__ import annotations

from pathlib import Path

import torch


def read_word_list(path: Path | str) -> tuple[list[str], int]:
    """Words of a vocabulary file, and the number of blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: vocabulary file not found")
    from elmo_dist.data.textio import iter_lines, sniff_text_file
    sniff_text_file(path)  # refuses UTF-16/32, naming the conversion
    words, blank = [], 0
    for line in iter_lines(path):  # "\n" only, as the vocabulary reader splits
        word = line.strip()
        if word:
            words.append(word)
        else:
            blank += 1
    if not words:
        raise ValueError(f"{path}: vocabulary file holds no words")
    return words, blank


@torch.inference_mode()
def token_embeddings(bilm, words: list[str], batch_size: int = 1024) -> torch.Tensor:
    """(V, P) character-CNN outputs of ``words`` (float32, on the model's device)."""
    from .embedder import TokenEmbeddingCache
    bilm.eval()
    return TokenEmbeddingCache(bilm.encoder, encode_batch=batch_size).encode(words)


def export_token_embeddings(bilm, vocab_file: Path | str, output_file: Path | str, batch_size: int = 1024) -> dict:
    """Writes the token embeddings of every word in ``vocab_file``; returns counts for the report."""
    import h5py

    from elmo_dist.utils import atomic_path

    words, blank = read_word_list(vocab_file)
    emb = token_embeddings(bilm, words, batch_size).float().cpu().numpy()  # (V, P)
    with atomic_path(output_file) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("embedding", data=emb)
        f.create_dataset("words", data=words, dtype=h5py.string_dtype())
    return {"words": len(words), "blank_lines": blank, "dim": int(emb.shape[1])}
