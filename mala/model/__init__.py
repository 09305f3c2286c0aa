"""The MALA network: ViT encoder/decoder (MAE names), PLPM discriminator, Token Balance Module."""

from mala.model.mala import MALA, image_score, reconstruction_map
from mala.model.plpm import PseudoLabelPredictor

__all__ = ["MALA", "PseudoLabelPredictor", "image_score", "reconstruction_map"]
