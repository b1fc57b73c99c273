"""Models: the one decoder, its config, and checkpoint loading."""
from jaxmem.models.checkpoints import ALIASES, DEFAULT_MODEL, LoadedModel, load_model
from jaxmem.models.config import ModelConfig
from jaxmem.models.transformer import hidden_states, init_params, logits

__all__ = ["ALIASES", "DEFAULT_MODEL", "LoadedModel", "ModelConfig", "hidden_states",
           "init_params", "load_model", "logits"]
