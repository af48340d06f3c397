"""Embeddings out of a biLM: sentence layers to HDF5, context-independent token embeddings.

``Embedder`` runs a biLM for inference with a cross-batch cache of character-CNN outputs;
``export_sentences`` writes the AllenNLP ``elmo`` HDF5 convention; ``export_token_embeddings``
writes bilm-tf's ``dump_token_embeddings`` layout for a vocabulary file.
"""
from .embedder import Embedder, TokenEmbeddingCache, batches_by_length
from .sentences import MODES, ExportReport, export_sentences
from .token_embeddings import export_token_embeddings, read_word_list, token_embeddings

__all__ = ["Embedder", "ExportReport", "MODES", "TokenEmbeddingCache", "batches_by_length", "export_sentences",
           "export_token_embeddings", "read_word_list", "token_embeddings"]
