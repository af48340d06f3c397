"""Embedding from Python: ``elmo_dist.embed(sentences, ...)`` -> numpy arrays, on the fast path.

    import elmo_dist
    layers = elmo_dist.embed(["The cat sat .", "Hello !"], run_dir="runs/demo")   # 2 arrays (L+1, T, 2P)
    top = elmo_dist.embed("The cat sat .", options="options.json", weights="lm_weights.hdf5", output="top")
    embedder = elmo_dist.load_embedder(run_dir="runs/demo")   # load once; its token cache stays warm
    vectors = elmo_dist.embed(texts, embedder, output="average", sentence_vectors=True)   # (N, 2P)

The arrays are what ``elmo-dist export`` writes for the same lines (``lines.py``): per sentence
(L+1, T, 2P) for ``output="all"``, (T, 2P) for ``"top"`` / ``"average"``; with
``sentence_vectors`` the mean over the tokens, stacked over the sentences: (N, L+1, 2P) or
(N, 2P). It runs the ``Embedder`` (a cache of what depends on a word alone, LSTMs on packed
sequences): the same vectors as ``BiLM.forward``, stateless unless the given Embedder is
stateful. Sentences over ``max_tokens`` go in windows with the state carried (exact), or are
cut with ``long_lines="cut"``.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import numpy as np

from elmo_dist.runs import load_bilm

from .embedder import Embedder
from .lines import ArrayStore, OutputSpec, embed_lines, empty_result


def load_embedder(run_dir=None, checkpoint=None, options=None, weights=None, device: Optional[str] = None,
                  stateful: bool = False, cache_mb: float = 1024.0) -> Embedder:
    """An ``Embedder`` over :func:`load_bilm`'s model, to pass to :func:`embed` call after call."""
    return Embedder(load_bilm(run_dir, checkpoint, options, weights, device, stateful), stateful=stateful,
                    cache_mb=cache_mb)


def _tokenized(sentences, tokenizer) -> tuple[list[list[str]], bool]:
    """(token lists, whether one sentence was given as a str)."""
    from elmo_dist.data.tokenize import get_tokenizer
    tokenize = get_tokenizer(tokenizer) if isinstance(tokenizer, str) else tokenizer
    if isinstance(sentences, str):
        return [tokenize(sentences)], True
    out = []
    for i, s in enumerate(sentences):
        if isinstance(s, str):
            out.append(tokenize(s))
        elif isinstance(s, (list, tuple)) and all(isinstance(t, str) for t in s):
            out.append(list(s))
        else:
            raise ValueError(f"sentences[{i}] must be a str (text) or a list of str tokens; got {type(s).__name__}")
    return out, False


def embed(sentences: Union[str, Sequence[str], Sequence[Sequence[str]]], model=None, *,
          run_dir=None, options=None, weights=None, device: Optional[str] = None,
          output: str = "all", sentence_vectors: bool = False, batch_size: int = 64,
          max_batch_tokens: int = 4096, max_tokens: int = 1000, long_lines: str = "window",
          tokenizer: Union[str, Callable[[str], list]] = "whitespace"):
    """ELMo layers of ``sentences`` as float32 numpy arrays (see the module docstring).

    sentences: one text (a str: one array back, not a list), a list of texts (each tokenised
    by ``tokenizer``: whitespace, treebank, nltk, toktok or a callable), or a list of token lists.
    model: an ``Embedder`` (reused, cache kept) or a ``BiLM`` (embedded stateless; its
    ``stateful`` flag and train/eval mode are restored after); or give ``run_dir`` or
    ``options`` and ``weights`` to load one. An empty sentence gets (L+1, 0, 2P) / (0, 2P), or
    a zero sentence vector.
    """
    if batch_size < 1 or max_tokens < 1:
        raise ValueError(f"batch_size and max_tokens must be >= 1; got {batch_size}, {max_tokens}")
    if long_lines not in ("window", "cut"):
        raise ValueError(f"long_lines must be 'window' or 'cut'; got {long_lines!r}")
    spec = OutputSpec(output, sentence_vectors)
    token_lists, single = _tokenized(sentences, tokenizer)
    if long_lines == "cut":
        token_lists = [tokens[:max_tokens] for tokens in token_lists]
    if model is None:
        model = load_bilm(run_dir, None, options, weights, device, stateful=False)
    elif run_dir is not None or options is not None or weights is not None:
        raise ValueError("give a model or run_dir / options+weights, not both")
    if isinstance(model, Embedder):
        results = _run(model, token_lists, spec, batch_size, max_batch_tokens, max_tokens)
    else:
        stateful, training = model.stateful, model.training
        try:
            results = _run(Embedder(model, stateful=False), token_lists, spec, batch_size, max_batch_tokens,
                           max_tokens)
        finally:
            model.stateful = stateful
            model.train(training)
    if single:
        return results[0]
    if sentence_vectors:
        return np.stack(results) if results else np.zeros((0, *_vector_shape(model, spec)), dtype=np.float32)
    return results


def _vector_shape(model, spec: OutputSpec) -> tuple:
    """Shape of one sentence vector of ``model`` (a BiLM or an Embedder)."""
    cfg = (model.bilm if isinstance(model, Embedder) else model).config
    return spec.shape(0, cfg.n_layers + 1, 2 * cfg.projection_dim)


def _run(embedder: Embedder, token_lists: list, spec: OutputSpec, batch_size: int, max_batch_tokens: int,
         window: int) -> list:
    store = ArrayStore()
    items = [(i, tokens) for i, tokens in enumerate(token_lists) if tokens]
    embedder.prefetch(tokens for _, tokens in items)
    embed_lines(embedder, items, spec, store, batch_size, max_batch_tokens, window)
    empty = empty_result(spec, embedder.n_layers, embedder.output_dim)
    return [store.arrays[i] if i in store.arrays else empty.copy() for i in range(len(token_lists))]
