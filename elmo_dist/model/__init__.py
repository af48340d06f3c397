"""The ELMo biLM. Imports torch (and elmo_dist_kernels) only: no deepspeed, no torch.distributed."""
from .bilm import BiLM, BiLMOutput, BiLMState, LMLoss, token_mask
from .config import PRESETS, ModelConfig, preset
from .elmo import Elmo, ElmoOutput, ScalarMix
from .lstm import LSTMState

__all__ = ["BiLM", "BiLMOutput", "BiLMState", "Elmo", "ElmoOutput", "LMLoss", "LSTMState", "ModelConfig", "PRESETS",
           "ScalarMix", "preset", "token_mask"]
