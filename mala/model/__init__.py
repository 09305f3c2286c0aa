"""The MALA network (ViT encoder/decoder with MAE names, PLPM discriminator, Token Balance Module) and its maps."""

from mala.model.mala import MALA
from mala.model.maps import image_score, reconstruction_map
from mala.model.plpm import PseudoLabelPredictor

__all__ = ["MALA", "PseudoLabelPredictor", "image_score", "reconstruction_map"]
