"""Embeddings out of a biLM: sentence layers to HDF5, context-independent token embeddings.

``embed`` is the Python entry point (numpy arrays back); ``Embedder`` runs a biLM for inference
with a cross-batch cache of character-CNN outputs; lines over a window run in windows with the
LSTM state carried (``windows``);
``export_sentences`` writes the AllenNLP ``elmo`` HDF5 convention; ``export_token_embeddings``
writes bilm-tf's ``dump_token_embeddings`` layout for a vocabulary file.
"""
from .api import embed, load_bilm, load_embedder
from .embedder import Embedder, TokenEmbeddingCache, batches_by_length
from .lines import MODES, OutputSpec, embed_lines
from .sentences import ExportReport, export_sentences
from .token_embeddings import export_token_embeddings, read_word_list, token_embeddings
from .windows import run_in_windows

__all__ = ["Embedder", "ExportReport", "MODES", "OutputSpec", "TokenEmbeddingCache", "batches_by_length", "embed",
           "embed_lines", "export_sentences", "export_token_embeddings", "load_bilm", "load_embedder",
           "read_word_list", "run_in_windows", "token_embeddings"]
