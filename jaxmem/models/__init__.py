"""Models: the one decoder (Flax Linen), its config, and checkpoint loading."""
from jaxmem.models.adapters import Adapters, PrefixSpec, PromptSpec
from jaxmem.models.checkpoints import ALIASES, DEFAULT_MODEL, LoadedModel, load_model
from jaxmem.models.config import ModelConfig
from jaxmem.models.transformer import (Decoder, abstract_params, hidden_states, init_params,
                                       logical_axes, logits)
from jaxmem.models.tiny import tiny_model

__all__ = ["ALIASES", "Adapters", "DEFAULT_MODEL", "Decoder", "LoadedModel", "ModelConfig",
           "PrefixSpec", "PromptSpec", "abstract_params", "hidden_states", "init_params",
           "load_model", "logical_axes", "logits", "tiny_model"]
