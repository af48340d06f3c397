"""Unlabelled in-domain text for pretraining, cut from a labelled set along the classifier's split.

ELMo's layers help a task most when the biLM was trained on text like the task's (Peters et
al. 2018 fine-tune the biLM on task text; the demo measured it: see the README). The train and
dev documents of a labelled set are such text, used without their labels; the test documents
never enter pretraining and are written apart, for a held-out perplexity only.

    OUT/train.txt  every non-blank line of every train document, tokenised, one line per line
    OUT/dev.txt    the same for the dev documents (the biLM's held-out perplexity while training)
    OUT/test.txt   the same for the test documents (evaluation only)
    OUT/split.json the document ids of each file, the split seed and fractions

Lines are tokenised and normalised exactly as the classifier's documents are
(``text.line_tokens``), so the biLM sees the word forms it will later embed.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from .data import SPLITS, LabeledDocs, make_split
from .text import line_tokens


def write_pretraining_text(docs: LabeledDocs, out_dir: Path | str, tokenizer: str = "treebank",
                           style: str = "ptb", split: Sequence[float] = (0.7, 0.1, 0.2),
                           split_seed: int = 13) -> dict:
    """Writes OUT/{train,dev,test}.txt and split.json (atomically); returns {split: path} plus
    ``tokens`` {split: count}. The split is :func:`data.make_split` of the same arguments, the
    one ``elmo-dist classify`` uses, so no test document is in train.txt or dev.txt."""
    from elmo_dist.data.tokenize import get_tokenizer
    from elmo_dist.utils import atomic_write_text

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenize = get_tokenizer(tokenizer)
    parts = make_split(docs, split, split_seed)
    paths, counts = {}, {}
    for name in SPLITS:
        lines = []
        for i in parts[name]:
            for raw in docs.texts[i].splitlines():
                tokens = line_tokens(raw, tokenize, style)
                if tokens:
                    lines.append(" ".join(tokens))
        if not lines:
            raise ValueError(f"{docs.source}: the {name} documents hold no tokens; nothing to pretrain on")
        paths[name] = out / f"{name}.txt"
        atomic_write_text(paths[name], "\n".join(lines) + "\n")
        counts[name] = sum(len(line.split()) for line in lines)
    atomic_write_text(out / "split.json", json.dumps(
        {"source": docs.source, "seed": split_seed, "fractions": list(split), "tokenizer": tokenizer, "style": style,
         "tokens": counts, "ids": {s: [docs.ids[i] for i in parts[s]] for s in SPLITS}}, indent=2) + "\n")
    return {**paths, "tokens": counts}
