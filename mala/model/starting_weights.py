"""Starting weights for stage 1 (`mala train --init`): official MAE checkpoints, timm-style state dicts, our own files.

Accepted: `mae_pretrain_vit_*.pth` (encoder only), `mae_visualize_vit_*.pth` (encoder and decoder; trained without
norm_pix_loss, so its pixel head predicts ImageNet-normalised pixels, as ours does), timm-style state dicts (flat, or
under `model` / `state_dict`), and mala safetensors files (`model.safetensors` of `train` or `pretrain`, or a run
folder). `.pth` files are read with `weights_only=True`: a file that needs pickle for more than tensors is refused.

Rules: the encoder must be complete; the decoder (with mask token and pixel head) is loaded whole or not at all;
position embeddings are fixed sine-cosine and regenerated for the model's image size instead of loaded; the Token
Balance Module is never loaded (stage 2 starts it afresh, as the paper does). Any other difference is an error
before anything is copied, so a file never loads in part.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mala.checkpoint import load_weights, model_file
from mala.model.load import describe_mismatch, first_keys
from mala.errors import CheckpointError
from mala.model.mala import MALA
from mala.sizes import ImageShape, describe_shape

PARTS = {
    "encoder": ("cls_token", "patch_embed.", "blocks.", "norm."),
    "decoder": ("mask_token", "decoder_embed.", "decoder_blocks.", "decoder_norm.", "decoder_pred."),
}
REGENERATED = ("pos_embed", "decoder_pos_embed")
IGNORED = {  # prefix: why the weights under it are skipped
    "head.": "timm's classifier",
    "fc_norm.": "timm's pooled-feature norm",
    "tbm.": "the Token Balance Module, which stage 2 starts afresh",
    "feature_tokens.": "the hybrid's frozen ImageNet backbone, which comes from its package",
    "memory.": "the normal-feature memory, which is filled anew after training",
    "decoder_feature_pred.": "the hybrid's stage-1 feature head, which stage 1 starts afresh",
}
STATE_DICT_WRAPPERS = ("model", "state_dict")


@dataclass
class Initialisation:
    """What `initialise` took from a file, for the run's output."""

    path: Path
    parts: list[str]  # model parts loaded, "encoder" first
    image_shape: ImageShape  # position embeddings were regenerated for it
    ignored: dict[str, list[str]] = field(default_factory=dict)  # reason: keys

    def summary(self) -> str:
        kept = " and ".join(self.parts)
        lines = [f"initialised {kept} from {self.path}; position embeddings regenerated for "
                 f"{describe_shape(self.image_shape)}"]
        if "decoder" not in self.parts:
            lines.append("the file holds no decoder: decoder, mask token and pixel head keep their fresh start")
        lines += [f"ignored {reason}: {first_keys(keys)}" for reason, keys in self.ignored.items()]
        return "\n".join(lines)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors by name from a `.safetensors` file (or run folder) or a torch file (`.pth`, `.pt`, `.bin`)."""
    path = model_file(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    if path.suffix == ".safetensors":
        return load_weights(path)
    return _unwrap(_load_torch_file(path), path)


def _load_torch_file(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: holds Python objects besides tensors; refused, since unpickling them could run code "
            "(save the state dict alone, e.g. torch.save({'model': model.state_dict()}, path))"
        ) from None
    except Exception as exc:  # torch reports foreign or damaged files with many exception types, KeyError among them
        raise CheckpointError(f"{path}: not a checkpoint torch can read ({type(exc).__name__}: {exc})") from None


def _unwrap(content: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict itself, or the one under a `model` / `state_dict` key (MAE and many trainers wrap it)."""
    for wrapper in STATE_DICT_WRAPPERS:
        if isinstance(content, dict) and isinstance(content.get(wrapper), dict):
            content = content[wrapper]
            break
    if not isinstance(content, dict) or not content or not all(isinstance(v, torch.Tensor) for v in content.values()):
        raise CheckpointError(f"{path}: no state dict in it (tensors by name, possibly under 'model' or 'state_dict')")
    return dict(content)


def _part_of(key: str) -> str | None:
    return next((part for part, prefixes in PARTS.items() if key.startswith(prefixes)), None)


def _ignored_reason(key: str) -> str | None:
    return next((reason for prefix, reason in IGNORED.items() if key.startswith(prefix)), None)


def initialise(model: MALA, path: Path) -> Initialisation:
    """Copy the encoder (and the decoder, if the file has one) from `path` into `model`; nothing on a mismatch."""
    loadable: dict[str, torch.Tensor] = {}
    ignored: dict[str, list[str]] = {}
    for key, tensor in sorted(read_state_dict(path).items()):
        reason = _ignored_reason(key)
        if reason is not None:
            ignored.setdefault(reason, []).append(key)
        elif key not in REGENERATED:
            loadable[key] = tensor

    # the encoder is what --init is for; a decoder key anywhere means the file claims the whole decoder
    parts = ["encoder"] + (["decoder"] if any(_part_of(k) == "decoder" for k in loadable) else [])
    expected = {k: v for k, v in model.state_dict().items() if _part_of(k) in parts}
    problems = describe_mismatch(expected, loadable)
    if problems:
        cfg = model.cfg
        raise CheckpointError(
            f"{path}: does not fit the model ({problems}); the config builds an encoder of width {cfg.embed_dim}, "
            f"depth {cfg.depth}, patch {cfg.patch_size} and a decoder of width {cfg.decoder_embed_dim}, "
            f"depth {cfg.decoder_depth}"
        )
    model.load_state_dict(loadable, strict=False)
    model.reset_position_embeddings()  # fixed sine-cosine for this image size, whatever the file's size was
    return Initialisation(Path(path), parts, model.image_shape, ignored)
