"""JEPA perception: ViT encoder, multi-block masking, EMA-target pretraining, encoder adapters."""

from world_models.regularizers import vicreg_terms
from world_models.vit_jepa.encoder import (
    EncoderSpecError,
    JEPAEncoder,
    VJEPA2Encoder,
    load_encoder,
    parse_pool,
    pool_tokens,
    read_encoder_file,
    save_encoder,
)
from world_models.vit_jepa.masking import MaskConfig, sample_masks
from world_models.vit_jepa.model import JEPA, JEPAConfig, Predictor
from world_models.vit_jepa.vit import (
    INPUT_NORMS,
    PRESETS,
    ConfigError,
    ViT,
    ViTConfig,
    fit_input_stats,
    make_config,
)

__all__ = [
    "INPUT_NORMS",
    "PRESETS",
    "ConfigError",
    "EncoderSpecError",
    "JEPA",
    "JEPAConfig",
    "JEPAEncoder",
    "MaskConfig",
    "Predictor",
    "VJEPA2Encoder",
    "ViT",
    "ViTConfig",
    "fit_input_stats",
    "load_encoder",
    "make_config",
    "parse_pool",
    "pool_tokens",
    "read_encoder_file",
    "sample_masks",
    "save_encoder",
    "vicreg_terms",
]
