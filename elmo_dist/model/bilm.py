"""The ELMo bidirectional language model.

    tokens (B, T, 50) char ids --CharCNNEncoder--> x (B, T, P)
    forward stack  (left to right): n_layers LSTMP outputs (B, T, P)
    backward stack (right to left): n_layers LSTMP outputs (B, T, P)
    training: one shared softmax scores the top forward output against the next token and the
              top backward output against the previous token; loss = (mean_fwd + mean_bwd) / 2
    embedding: layers (B, n_layers + 1, T, 2P): layer 0 = [x, x], layer k = [fwd_k, bwd_k]

State: the LSTM state of each batch row is carried from one batch to the next (bilm-tf's
training recipe and AllenNLP's stateful inference). Training passes it in and gets it back
(``lm_loss``); ``forward`` for embeddings keeps it in ``self.state`` when ``stateful`` is True
and starts from zeros every call when it is False (same sentence, same vectors).
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor, nn

from .char_cnn import CharCNNEncoder
from .config import ModelConfig
from .lstm import LSTMStack, LSTMState, run_bidirectional, steps_together
from .softmax import build_softmax

# Shifted character ids of the sentence boundary tokens (see elmo_dist.data.chars).
_MAX_CHARS = 50


def _boundary_char_ids(char: int, length: int = _MAX_CHARS) -> list[int]:
    ids = [261] * length  # padding char 260, shifted
    ids[0], ids[1], ids[2] = 259, char + 1, 260  # begin-of-word 258, the char, end-of-word 259
    return ids


BOS_CHAR_IDS = _boundary_char_ids(256)
EOS_CHAR_IDS = _boundary_char_ids(257)


class BiLMState(NamedTuple):
    fwd: LSTMState
    bwd: LSTMState

    def detach(self) -> "BiLMState":
        return BiLMState(*(LSTMState(s.h.detach(), s.c.detach()) for s in self))


class LMLoss(NamedTuple):
    """loss: the training objective; the sums and counts let callers aggregate perplexity."""
    loss: Tensor
    fwd_nll: Tensor
    fwd_count: Tensor
    bwd_nll: Tensor
    bwd_count: Tensor


class BiLMOutput(NamedTuple):
    layers: Tensor  # (B, n_layers + 1, T, 2P), sentence boundaries removed
    mask: Tensor  # (B, T) bool


def token_mask(char_ids: Tensor) -> Tensor:
    """(B, T, C) -> (B, T) bool: True where the token slot holds a token."""
    return (char_ids > 0).any(dim=-1)


class BiLM(nn.Module):
    def __init__(self, config: ModelConfig, stateful: bool = True):
        super().__init__()
        self.config = config
        self.encoder = CharCNNEncoder(config)
        self.forward_lm = LSTMStack(config, reverse=False)
        self.backward_lm = LSTMStack(config, reverse=True)
        self.softmax = build_softmax(config) if config.vocab_size > 0 else None
        self.dropout = nn.Dropout(config.dropout)
        self.stateful = stateful
        self.state: Optional[BiLMState] = None

    # ----------------------------------------------------------------- shared core
    def run_stacks(self, x: Tensor, mask: Tensor, state: Optional[BiLMState]):
        """x (B, T, P) -> fwd and bwd layer lists [(B, T, P)] and the new BiLMState."""
        if steps_together(self.config, x.device):
            fwd, bwd, fwd_state, bwd_state = run_bidirectional(
                self.forward_lm, self.backward_lm, x, mask, *(state if state is not None else (None, None)))
            return fwd, bwd, BiLMState(fwd_state, bwd_state)
        fwd, fwd_state = self.forward_lm(x, mask, state.fwd if state is not None else None)
        bwd, bwd_state = self.backward_lm(x, mask, state.bwd if state is not None else None)
        return fwd, bwd, BiLMState(fwd_state, bwd_state)

    # ----------------------------------------------------------------- training
    def lm_loss(self, char_ids: Tensor, fwd_targets: Tensor, bwd_targets: Tensor,
                state: Optional[BiLMState] = None) -> tuple[LMLoss, BiLMState]:
        """Language-model loss on windows that already hold <S>/</S> tokens.

        char_ids (B, T, 50); targets (B, T) word ids, -1 where there is no target.
        Returns the LMLoss and the final state (detach it before carrying it on).
        """
        if self.softmax is None:
            raise ValueError("this BiLM has no softmax (vocab_size=0); it can embed but not compute an LM loss")
        mask = token_mask(char_ids)
        x = self.encoder(char_ids)  # (B, T, P)
        # Training windows are full but at the corpus' end; no mask is the same recurrence
        # without two selects per step and direction (and their backward).
        fwd, bwd, new_state = self.run_stacks(x, None if bool(mask.all()) else mask, state)
        # Both directions' rows through the softmax at once: one call, larger GEMMs.
        hidden, kept = [], []
        for top, targets in ((fwd[-1], fwd_targets), (bwd[-1], bwd_targets)):
            keep = targets.reshape(-1) >= 0
            hidden.append(self.dropout(top).reshape(-1, top.shape[-1])[keep])  # (N_dir, P)
            kept.append(targets.reshape(-1)[keep])
        counts = [h.shape[0] for h in hidden]
        nll = self.softmax.nll(torch.cat(hidden), torch.cat(kept))  # (N_fwd + N_bwd,)
        sums = [part.sum() for part in nll.split(counts)]
        counts = [torch.tensor(n, device=nll.device) for n in counts]
        means = [s / c.clamp(min=1) for s, c in zip(sums, counts)]
        loss = 0.5 * (means[0] + means[1])
        return LMLoss(loss, sums[0].detach(), counts[0], sums[1].detach(), counts[1]), new_state

    # ----------------------------------------------------------------- embedding
    @staticmethod
    def add_sentence_boundaries(char_ids: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T, C) -> (B, T + 2, C): <S> before and </S> after each row's tokens."""
        B, T, C = char_ids.shape
        lengths = mask.sum(dim=1)  # (B,)
        out = char_ids.new_zeros(B, T + 2, C)
        out[:, 1:T + 1] = char_ids
        rows = torch.arange(B, device=char_ids.device)
        out[:, 0] = char_ids.new_tensor(BOS_CHAR_IDS[:C])
        out[rows, lengths + 1] = char_ids.new_tensor(EOS_CHAR_IDS[:C])
        new_mask = torch.arange(T + 2, device=mask.device).unsqueeze(0) < (lengths + 2).unsqueeze(1)
        return out, new_mask

    def reset_state(self) -> None:
        """Forget the carried state (every row starts from zeros on the next call)."""
        self.state = None

    def state_for(self, batch_size: int, like: Tensor) -> Optional[BiLMState]:
        """Stored state for the first batch_size rows, zeros for rows never seen; None when
        stateless or nothing is stored yet (every row starts from zeros)."""
        if not self.stateful or self.state is None:
            return None
        have = self.state.fwd.h.shape[1]
        if have >= batch_size:
            return BiLMState(*(LSTMState(s.h[:, :batch_size], s.c[:, :batch_size]) for s in self.state))
        zeros = self.forward_lm.zero_state(batch_size - have, like)
        return BiLMState(*(LSTMState(torch.cat([s.h, zeros.h], 1), torch.cat([s.c, zeros.c], 1)) for s in self.state))

    def store_state(self, new: BiLMState) -> None:
        """Keeps ``new`` (detached) as the carried state of its rows; rows past it keep theirs."""
        new = new.detach()
        if self.state is None or self.state.fwd.h.shape[1] <= new.fwd.h.shape[1]:
            self.state = new
            return
        b = new.fwd.h.shape[1]  # rows beyond this batch keep their older state
        merged = []
        for old, cur in zip(self.state, new):
            h, c = old.h.clone(), old.c.clone()
            h[:, :b], c[:, :b] = cur.h, cur.c
            merged.append(LSTMState(h, c))
        self.state = BiLMState(*merged)

    def forward(self, char_ids: Tensor) -> BiLMOutput:
        """char ids from ``batch_to_ids`` (B, T, 50) -> all layers (B, L+1, T, 2P) and mask (B, T)."""
        mask = token_mask(char_ids)
        framed, framed_mask = self.add_sentence_boundaries(char_ids, mask)
        x = self.encoder(framed)  # (B, T+2, P)
        fwd, bwd, new_state = self.run_stacks(x, framed_mask, self.state_for(char_ids.shape[0], x))
        if self.stateful:
            self.store_state(new_state)
        layers = [torch.cat([x, x], dim=-1)] + [torch.cat([f, b], dim=-1) for f, b in zip(fwd, bwd)]
        stacked = torch.stack(layers, dim=1)  # (B, L+1, T+2, 2P)
        # Remove the boundaries: row b's tokens sit at 1 .. len_b; shift them to 0 .. len_b-1.
        T = char_ids.shape[1]
        out = stacked[:, :, 1:T + 1] * mask[:, None, :, None]  # (B, L+1, T, 2P)
        return BiLMOutput(out, mask)

    # ----------------------------------------------------------------- ELMo format
    @classmethod
    def from_allennlp(cls, options_file, weight_file, softmax_file=None, stateful: bool = True,
                      **overrides) -> "BiLM":
        """A biLM from bilm-tf/AllenNLP options.json + lm_weights.hdf5, in eval mode (see allennlp_format)."""
        from .allennlp_format import load_allennlp
        return load_allennlp(options_file, weight_file, softmax_file, stateful=stateful, **overrides)

    def to_allennlp(self, out_dir, softmax: bool = True) -> dict:
        """Writes options.json + lm_weights.hdf5 (+ softmax_weights.hdf5) into out_dir (see allennlp_format)."""
        from .allennlp_format import save_allennlp
        return save_allennlp(self, out_dir, softmax=softmax)

    def num_parameters(self, include_softmax: bool = False) -> int:
        total = sum(p.numel() for p in self.parameters())
        if not include_softmax and self.softmax is not None:
            total -= sum(p.numel() for p in self.softmax.parameters())
        return total
