"""Typed configuration of a MALA run, loaded from YAML presets (`mala/presets/*.yaml`) or user files."""

from __future__ import annotations

import dataclasses
import functools
import math
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from mala.backbone_stages import STAGE_STRIDES, unfit_stages
from mala.errors import ConfigError
from mala.sizes import SIZE_FORMS, ImageShape, image_shape, is_aspect, stored_size
from mala.tiling import TileGrid, check_tiling, default_stride

PRESET_DIR = Path(__file__).parent / "presets"
# what Lightning Fabric takes as `precision` (lightning_fabric's _PRECISION_INPUT, 2.6; tests/test_config.py compares)
PRECISIONS = ("32-true", "32", "16-mixed", "16", "bf16-mixed", "bf16", "16-true", "bf16-true", "64-true", "64",
              "transformer-engine", "transformer-engine-float16")
# how a value of each plain type is named in an error: (one, several)
TYPE_NAMES = {int: ("an integer", "integers"), float: ("a finite number", "numbers"),
              bool: ("true or false", "true/false"), str: ("a string", "strings"), type(None): ("null", "nulls")}

Rule = tuple[Callable[[Any], bool], str]  # (does the value pass, what is allowed in words)


def _require(condition: bool, key: str, allowed: str, value: Any) -> None:
    """One ConfigError naming `key`, what it allows and the `value` it got, unless `condition` holds."""
    if not condition:
        raise ConfigError(f"{key} must be {allowed}, got {value!r}")


def _at_least(low: int) -> Rule:
    """The rule `value >= low`."""
    return (lambda value: value >= low), f"at least {low}"


def _within(low: float, high: float, *, below: bool = False) -> Rule:
    """The rule `low <= value <= high`, or `< high` when `below`."""
    if below:
        return (lambda value: low <= value < high), f"at least {low} and below {high}"
    return (lambda value: low <= value <= high), f"from {low} to {high}"


def _one_of(choices: tuple[Any, ...]) -> Rule:
    """The rule `value in choices`."""
    return (lambda value: value in choices), "one of " + ", ".join(map(str, choices))


POSITIVE, NON_NEGATIVE, UNIT_INTERVAL = _at_least(1), _at_least(0), _within(0, 1)
ODD: Rule = (lambda value: value >= 1 and value % 2 == 1), "an odd number, at least 1"


def _matches(value: Any, hint: Any) -> bool:
    """Whether `value` has the annotated type `hint`: an int is no bool, a number is an int or finite float."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return any(type(value) is type(choice) and value == choice for choice in args)
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in args)
    if origin is list:
        return isinstance(value, list) and all(_matches(item, args[0]) for item in value)
    if origin is tuple:
        return isinstance(value, (tuple, list)) and len(value) == len(args) and all(map(_matches, value, args))
    if origin is dict:
        return isinstance(value, dict) and all(_matches(k, args[0]) and _matches(v, args[1]) for k, v in value.items())
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _describe(hint: Any, several: bool = False) -> str:
    """The annotated type `hint` in words, as errors name what is allowed."""
    origin, args = get_origin(hint), get_args(hint)
    if origin is Literal:
        return _one_of(args)[1]
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(arg) for arg in args)
    if origin is list:
        return f"a list of {_describe(args[0], several=True)}"
    if origin is tuple:
        return f"a list of {len(args)} {_describe(args[0], several=True)}"
    if origin is dict:
        return f"a mapping of {_describe(args[0], several=True)} to {_describe(args[1], several=True)}"
    return TYPE_NAMES[hint][several]


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """The fields' annotations of config section `cls`, resolved."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


class _Section:
    """A config section: the type of every value and the `RULES` table are checked when it is built."""

    SECTION: ClassVar[str]  # the name in YAML and in `--set SECTION.KEY=VALUE`
    RULES: ClassVar[dict[str, Rule]] = {}  # key -> what its value must be, beyond its type

    def __post_init__(self) -> None:
        for name, hint in _field_types(type(self)).items():
            value = getattr(self, name)
            _require(_matches(value, hint), self.key(name), _describe(hint), value)
        for name, (holds, allowed) in self.RULES.items():
            value = getattr(self, name)
            _require(holds(value), self.key(name), allowed, value)

    def key(self, name: str) -> str:
        """`section.name`, as errors name a value."""
        return f"{self.SECTION}.{name}"


@dataclass
class ModelConfig(_Section):
    """ViT encoder/decoder sizes (MAE naming) and the stage-2 head."""

    SECTION = "model"
    RULES = {"patch_size": POSITIVE, "embed_dim": POSITIVE, "depth": NON_NEGATIVE, "num_heads": POSITIVE,
             "decoder_embed_dim": POSITIVE, "decoder_depth": POSITIVE, "decoder_num_heads": POSITIVE,
             "mlp_ratio": ((lambda value: value > 0), "above 0"), "plpm_width": POSITIVE,
             "memory_weight": UNIT_INTERVAL, "memory_size": POSITIVE, "memory_section_size": NON_NEGATIVE,
             "memory_radius": NON_NEGATIVE,
             "memory_stride": NON_NEGATIVE, "memory_sigma": NON_NEGATIVE, "memory_pool": ODD,
             "score_memory_weight": UNIT_INTERVAL, "score_memory_stride": NON_NEGATIVE,
             "score_map_share": UNIT_INTERVAL, "global_share": UNIT_INTERVAL}

    image_size: int | list[int] = 224  # square side, or [height, width]; read it as `image_shape`
    patch_size: int = 16
    embed_dim: int = 192
    depth: int = 12  # 0: the decoder reads the (embedded) tokens directly, no encoder blocks
    num_heads: int = 3
    decoder_embed_dim: int = 128
    decoder_depth: int = 4
    decoder_num_heads: int = 4
    mlp_ratio: float = 4.0
    plpm_width: int = 32  # channels of the first PLPM conv layer; doubled at each downsampling
    use_tbm: bool = True  # ablation: without TBM the map comes from the decoder tokens alone
    # hybrid encoder (README, "Pretrained backbone"): none = the paper's pixel ViT; else a frozen ImageNet
    # EfficientNet-Lite whose feature maps become the tokens; patch_size is then the token grid's stride (8 or 16)
    backbone: Literal["none", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"] = "none"
    backbone_stages: list[int] = field(default_factory=lambda: [2, 4])  # timm's blocks.S: stride 8 and 16
    tbm_tokens: Literal["encoder", "backbone"] = "encoder"  # Z_enc_first of eq. 5: first encoder block or backbone
    memory_weight: float = 0.0  # hybrid only: share of the normal-feature memory's map in the anomaly map
    memory_size: int = 200_000  # most normal tokens the memory keeps (`fill_memory.MEMORY_CUTS` beyond it)
    # most tokens a section keeps (`fill_memory.MEMORY_CUTS` beyond it; 0: no limit): with the category known an image
    # searches one section, so this bounds the search's time on data whose normal tokens vary more than ours
    memory_section_size: int = 0
    # the memory keeps an epsilon-net of the normal tokens, epsilon = memory_radius x the normal distance scale:
    # a smaller, faster memory whose distances are off by at most epsilon; 0 keeps every token
    memory_radius: float = 0.0
    # how a map searches the memory on a CPU: int8 = an int8 shortlist of candidates re-ranked exactly in float32,
    # the exact minimum for 98.7 to 99.8 % of the tokens and at most 1.7 % above it for the rest, 1.6 x the images/s
    # in the largest section (BENCHMARKS.md "An int8 shortlist for the memory search"), in the ONNX export too
    # (onnxruntime's MatMulInteger); exact = float32 products throughout (a GPU always is)
    memory_search: Literal["exact", "int8"] = "int8"
    # the memory's token grid: stride 8 reads the backbone's stride-8 maps on their own grid, finer than the ViT's
    # tokens; 0 = the ViT's grid (patch_size)
    memory_stride: int = 0
    memory_sigma: float = 4.0  # px: the Gaussian blur of the memory's distance map (PatchCore smooths with 4)
    # the memory's tokens (`backbone.TokenRecipe`); the ViT's are always 3 x 3-pooled and layer-normed
    memory_pool: int = 3  # odd: each stage map average-pooled over memory_pool x memory_pool cells (1: not pooled)
    # token: each token layer-normed; image: each stage map divided by its RMS over the image; none: raw
    memory_norm: Literal["token", "image", "none"] = "token"
    # a second memory, of the memory's tokens layer-normed, whose map fused with weight score_memory_weight is what
    # the image score reads: raw tokens localise better, layer-normed ones rank images better (BENCHMARKS.md, "Two
    # memories"); false: the score reads the anomaly map
    score_memory: bool = False
    score_memory_weight: float = 0.75
    # the score memory's token grid (0: the memory's): the image score needs no fine grid, and a stride-16 search
    # costs a quarter of the queries of a stride-8 one
    score_memory_stride: int = 0
    # share of the score memory's scaled distances in the anomaly map's memory part (0: the memory's alone): a
    # coarser grid's distances mixed into a fine grid's see broad defects the fine tokens miss (BENCHMARKS.md, "A map
    # from two grids")
    score_map_share: float = 0.0
    # the global map (`mala.model.global_map`): an autoencoder of the memory's tokens through one latent per image,
    # trained after stage 2 (section `global_map`); its map takes `global_share` of the stage-2 map's place in the
    # anomaly map (the image score's map does not read it). `run.tune` chooses the share per category.
    global_map: bool = False
    global_share: float = 0.0

    def __post_init__(self) -> None:
        if is_aspect(self.image_size):  # resolved from the data by the command line, before a config exists
            raise ConfigError(f"model.image_size: expected {SIZE_FORMS}, got {self.image_size!r} (the aspect is "
                              "chosen from the training images: `--image-size aspect`)")
        self.image_size = stored_size(self.image_shape)  # checks it; [224, 224] is stored as 224
        super().__post_init__()
        for width, heads in (("embed_dim", "num_heads"), ("decoder_embed_dim", "decoder_num_heads")):
            _require(getattr(self, width) % getattr(self, heads) == 0, self.key(width),
                     f"a multiple of {self.key(heads)} ({getattr(self, heads)})", getattr(self, width))
        last = len(STAGE_STRIDES) - 1
        stages = self.backbone_stages
        _require(bool(stages) and len(set(stages)) == len(stages) and all(0 <= s <= last for s in stages),
                 self.key("backbone_stages"), f"a non-empty list of distinct stage indices from 0 to {last}", stages)
        # the memory and tbm_tokens are the hybrid's: the pixel ViT ignores them (`--set model.backbone=none` on
        # tiny, whose memory_weight is 0.75, is the README's way to the paper's model), so no rule ties them to it
        if self.backbone != "none":
            strides = ", ".join(f"{s}: {stride}" for s, stride in enumerate(STAGE_STRIDES))
            _require(not unfit_stages(stages, self.patch_size), self.key("backbone_stages"),
                     f"stages whose stride divides or is a multiple of model.patch_size {self.patch_size} "
                     f"(stride by stage: {strides})", stages)
            # the memory's grid is the ViT's or finer; the score memory's may be as coarse as the image allows
            for key, stride, coarsest, what in (
                    ("memory_stride", self.memory_token_stride, self.patch_size, "model.patch_size"),
                    ("score_memory_stride", self.score_memory_token_stride, self.size_multiple,
                     "the image size's multiple (the coarser of model.patch_size and the stages' strides)")):
                _require(coarsest % stride == 0 and not unfit_stages(stages, stride), self.key(key),
                         f"0 or a divisor of {what} {coarsest} that each stage's stride divides or is a multiple of "
                         f"(by stage: {strides})", getattr(self, key))
            one_grid = self.score_memory_token_stride == self.memory_token_stride
            _require(not (self.score_memory and self.memory_norm == "token" and one_grid), self.key("score_memory"),
                     "false while model.memory_norm is token on the memory's grid (the score memory holds the "
                     "memory's tokens layer-normed: the two would be one)", self.score_memory)

    @property
    def image_shape(self) -> ImageShape:
        """(height, width) of the model's input, whichever form `image_size` has."""
        return image_shape(self.image_size)

    @property
    def size_multiple(self) -> int:
        """What each side of the image must be a multiple of: the patch size, and the hybrid's coarsest backbone stride
        (so every feature map covers the image exactly and lands on the token grid)."""
        if self.backbone == "none":
            return self.patch_size
        return max([self.patch_size] + [STAGE_STRIDES[s] for s in self.backbone_stages])

    @property
    def token_grid(self) -> tuple[int, int]:
        """(rows, columns) of patch tokens."""
        return self._grid(self.patch_size)

    @property
    def has_memory(self) -> bool:
        """Whether the model keeps a normal-feature memory (a hybrid with `memory_weight` > 0)."""
        return self.backbone != "none" and self.memory_weight > 0

    @property
    def memory_token_stride(self) -> int:
        """The stride of the memory's token grid (`memory_stride`, or the patch size for 0)."""
        return self.memory_stride or self.patch_size

    @property
    def memory_grid(self) -> tuple[int, int]:
        """(rows, columns) of the memory's tokens."""
        return self._grid(self.memory_token_stride)

    @property
    def score_memory_token_stride(self) -> int:
        """The stride of the score memory's token grid (`score_memory_stride`, or the memory's for 0)."""
        return self.score_memory_stride or self.memory_token_stride

    @property
    def score_memory_grid(self) -> tuple[int, int]:
        """(rows, columns) of the score memory's tokens."""
        return self._grid(self.score_memory_token_stride)

    def _grid(self, stride: int) -> tuple[int, int]:
        height, width = self.image_shape
        return height // stride, width // stride


@dataclass
class Stage1Config(_Section):
    """Masked reconstruction of normal images (paper eq. 3)."""

    SECTION = "stage1"
    RULES = {"epochs": NON_NEGATIVE, "images_per_category": POSITIVE, "batch_size": POSITIVE, "base_lr": NON_NEGATIVE,
             "weight_decay": NON_NEGATIVE,
             "betas": ((lambda betas: all(0 <= beta < 1 for beta in betas)), "two numbers at least 0 and below 1"),
             "warmup_epochs": NON_NEGATIVE, "mask_ratio": _within(0, 1, below=True), "l1_weight": NON_NEGATIVE,
             "ssim_weight": NON_NEGATIVE, "adv_weight": NON_NEGATIVE, "feature_weight": NON_NEGATIVE}

    enabled: bool = True  # ablation: stage 2 straight from the initial (random or --init) encoder
    epochs: int = 2000
    images_per_category: int = 200
    batch_size: int = 128
    base_lr: float = 1e-3  # lr = base_lr * batch_size / 256, as in MAE
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.95)
    warmup_epochs: int = 40
    mask_ratio: float = 0.75
    l1_weight: float = 1.0
    ssim_weight: float = 1.0
    adv_weight: float = 0.05
    use_plpm: bool = True  # ablation: no adversarial term, no discriminator
    # hybrid encoder only: what the decoder learns to predict. pixels = the paper's eq. 3; features = the masked
    # tokens' backbone features (mean squared error, no PLPM); both = eq. 3 + feature_weight x the feature loss
    target: Literal["pixels", "features", "both"] = "pixels"
    feature_weight: float = 1.0

    @property
    def lr(self) -> float:
        return self.base_lr * self.batch_size / 256


@dataclass
class Stage2Config(_Section):
    """End-to-end anomaly-map training on synthetic anomalies, encoder frozen (paper eq. 6)."""

    SECTION = "stage2"
    RULES = {"epochs": NON_NEGATIVE, "images_per_category": POSITIVE, "anomalous_per_category": NON_NEGATIVE,
             "batch_size": POSITIVE, "lr": NON_NEGATIVE, "weight_decay": NON_NEGATIVE, "l1_weight": NON_NEGATIVE,
             "focal_weight": NON_NEGATIVE, "focal_gamma": NON_NEGATIVE}

    epochs: int = 700
    images_per_category: int = 80
    anomalous_per_category: int = 64
    batch_size: int = 32
    lr: float = 1e-4  # fixed; the paper gives no value, DRAEM's 1e-4 is the usual choice
    weight_decay: float = 0.05
    l1_weight: float = 1.0
    focal_weight: float = 1.0
    focal_gamma: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.anomalous_per_category <= self.images_per_category, self.key("anomalous_per_category"),
                 f"at most stage2.images_per_category ({self.images_per_category})", self.anomalous_per_category)


@dataclass
class GlobalMapConfig(_Section):
    """Training of the global map's autoencoder (`model.global_map`), after stage 2, on the memory's tokens of the
    normal training images (no synthetic anomalies): AdamW, 100 warm-up steps, cosine decay."""

    SECTION = "global_map"
    RULES = {"steps": POSITIVE, "batch_size": POSITIVE, "lr": NON_NEGATIVE, "weight_decay": NON_NEGATIVE,
             "images_per_category": POSITIVE}

    steps: int = 3000
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    images_per_category: int = 1000  # model inputs (images, or tiles) of a category it trains on: a random subset


@dataclass
class SynthConfig(_Section):
    """DRAEM-style synthetic anomalies used by stage 2."""

    SECTION = "synth"
    # the Perlin noise lies within [-1, 1]: a threshold of 1 never marks a pixel
    RULES = {"self_texture_prob": UNIT_INTERVAL, "perlin_min_exp": NON_NEGATIVE, "threshold": _within(0, 1, below=True),
             "max_blend": UNIT_INTERVAL, "num_augmentations": NON_NEGATIVE, "local_prob": UNIT_INTERVAL}

    texture_dir: str | None = None  # folder of texture images (DTD); None: the image itself is the source
    self_texture_prob: float = 0.5  # chance that the anomaly content comes from the image, not a texture
    perlin_min_exp: int = 0  # Perlin scales are 2**a x 2**b with a, b in [min_exp, max_exp]
    perlin_max_exp: int = 6
    threshold: float = 0.5
    max_blend: float = 0.8  # b in x*(1-m) + (1-b)*t*m + b*x*m is uniform in [0, max_blend]
    num_augmentations: int = 3
    local_prob: float = 0.5  # for object categories: chance of a foreground-restricted anomaly
    object_categories: list[str] | None = None  # None: decided per category from its images
    # recorded, not read: every saved config states where anomaly content came from (`describe_source`)
    anomaly_source: str = ""

    def describe_source(self) -> str:
        """Where the anomalies' content comes from, in words (the paper takes all of it from DTD)."""
        if not self.texture_dir:
            return "self-texture only (no DTD): every anomaly's content is the image itself"
        share = self.self_texture_prob
        return f"{1 - share:.0%} textures from {self.texture_dir}, {share:.0%} the image itself"
    # by hand, before both of the above: category -> true (object: anomalies on the foreground) or false (texture)
    objects: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.perlin_max_exp >= self.perlin_min_exp, self.key("perlin_max_exp"),
                 f"at least synth.perlin_min_exp ({self.perlin_min_exp})", self.perlin_max_exp)


@dataclass
class RunConfig(_Section):
    """Where and how training runs: device, precision, workers, seed, checkpointing."""

    SECTION = "run"
    RULES = {"devices": POSITIVE, "num_nodes": POSITIVE, "precision": _one_of(PRECISIONS), "accumulate": POSITIVE,
             "clip_grad": NON_NEGATIVE, "num_workers": NON_NEGATIVE, "seed": NON_NEGATIVE,
             "checkpoint_every": POSITIVE, "checkpoint_every_steps": NON_NEGATIVE, "keep_checkpoints": POSITIVE,
             "score_kernel": POSITIVE, "mirror_gflops": NON_NEGATIVE}

    accelerator: str = "auto"
    devices: int = 1  # batch sizes are per device: the global batch is batch_size x devices x num_nodes x accumulate
    num_nodes: int = 1
    strategy: str = "auto"  # Fabric strategy: auto (DDP when several devices), ddp, fsdp (not tested here)
    precision: str = "32-true"  # bf16 is emulated and slow on many CPUs: opt in explicitly
    accumulate: int = 1  # batches whose gradients add up to one optimizer step
    clip_grad: float = 0.0  # maximum gradient norm per optimizer step; 0: no clipping
    compile: bool = False  # torch.compile the transformer blocks (first steps slower; needs a C++ compiler on CPU)
    num_workers: int = 0
    seed: int = 0
    checkpoint_every: int = 1  # epochs between resumable checkpoints
    checkpoint_every_steps: int = 0  # optimizer steps between resumable checkpoints inside an epoch; 0: none
    keep_checkpoints: int = 1  # resumable checkpoints kept in checkpoints/ besides last.safetensors
    score_kernel: int = 21  # image score = max(avg_pool_k x k(map)), as DRAEM at 256 px
    pipeline: Literal["end_to_end", "reconstruction"] = "end_to_end"
    # hold 20 % of each category's normal images out of training, choose each category's map fusion on them with
    # small synthetic defects (`mala tune`'s protocol, without its second training run), then fill the memory
    # from all images; only a model with a normal-feature memory has a fusion to choose
    tune: bool = False
    # the FLOPs (x 1e9) mapping one model input may cost: tuning offers a category one or two mirror views of each
    # image (its maps averaged with theirs) where 1 + views passes of its cost stay within this; 0: never
    mirror_gflops: float = 0.0

    def __post_init__(self) -> None:
        if type(self.precision) is int:  # YAML reads `precision: 32` and `--precision 16` as ints; Fabric's "32", "16"
            self.precision = str(self.precision)
        super().__post_init__()


@dataclass
class TilingConfig(_Section):
    """Tiling (README, "Tiling"): each image is resized to `source_size` and cut into tiles of `model.image_size`
    `stride` pixels apart; the model sees tiles, and the maps of a grid of tiles are stitched by averaging."""

    SECTION = "tiling"  # the stride's range, 1 to the tile's side, is checked by MalaConfig, which knows the tile

    source_size: int | list[int] | None = None  # square side or [height, width]; None: no tiling
    stride: int | None = None  # pixels between tiles, both directions; None: 3/4 of the tile (a quarter overlap)

    def __post_init__(self) -> None:
        if self.source_size is not None:
            self.source_size = stored_size(image_shape(self.source_size, "tiling.source_size"))
        elif self.stride is not None:
            raise ConfigError(f"tiling.stride={self.stride!r} without tiling.source_size: tiling needs both "
                              "(mala train --tile SIZE --tile-stride STRIDE)")
        super().__post_init__()

    @property
    def enabled(self) -> bool:
        return self.source_size is not None


@dataclass
class MalaConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    stage1: Stage1Config = field(default_factory=Stage1Config)
    stage2: Stage2Config = field(default_factory=Stage2Config)
    global_map: GlobalMapConfig = field(default_factory=GlobalMapConfig)
    synth: SynthConfig = field(default_factory=SynthConfig)
    run: RunConfig = field(default_factory=RunConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)

    def __post_init__(self) -> None:
        if self.tiling.enabled:
            if self.tiling.stride is None:  # stored explicitly, so a later default cannot change a trained model
                self.tiling.stride = default_stride(self.model.image_shape)
            # before any image is read: a stride out of 1..tile, a tile larger than the source
            check_tiling(image_shape(self.tiling.source_size), self.model.image_shape, self.tiling.stride)

    @property
    def tile_grid(self) -> TileGrid | None:
        """Where the model's tiles lie on an input image; None without tiling."""
        if not self.tiling.enabled:
            return None
        return TileGrid(image_shape(self.tiling.source_size), self.model.image_shape, self.tiling.stride)

    @property
    def input_shape(self) -> ImageShape:
        """(height, width) every image is resized to: the tiling's source size, else the model's own size."""
        return image_shape(self.tiling.source_size) if self.tiling.enabled else self.model.image_shape

    def to_dict(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        values["synth"]["anomaly_source"] = self.synth.describe_source()
        return values

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))


def _build(cls: type, values: dict[str, Any], where: str) -> Any:
    """Instantiate dataclass `cls` from a mapping, rejecting unknown keys and recursing into sections."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    kwargs, defaults = {}, cls()
    for name, value in values.items():
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            value = _build(type(default), value, f"{where}.{name}")
        elif isinstance(default, tuple) and isinstance(value, list):  # YAML has lists, no tuples
            value = tuple(value)
        elif isinstance(default, dict):
            value = _as_flags(value, f"{where}.{name}")
        elif isinstance(default, float) and not isinstance(value, bool):
            value = _as_float(value)  # YAML reads 1e-3 (no dot) as a string
        kwargs[name] = value
    return cls(**kwargs)


def _as_float(value: Any) -> Any:
    """A number written as text (`1e-3`) as a float; anything else as it is, for the section's type check."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


def _as_flags(value: Any, where: str) -> dict[str, bool]:
    """A mapping of names to true/false, e.g. synth.objects."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(flag, bool) for flag in value.values()):
        raise ConfigError(f"{where}: expected a mapping of names to true/false, e.g. {{metal_plate: true}}, "
                          f"got {value!r}")
    return {str(name): flag for name, flag in value.items()}


def config_from_dict(values: dict[str, Any], where: str = "config") -> MalaConfig:
    return _build(MalaConfig, values, where)


def resolve_config_path(name_or_path: str) -> Path:
    """A preset name (`tiny`, `base`, `paper`) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.exists():
        return path
    preset = PRESET_DIR / f"{path.stem}.yaml"
    if path.parent == Path(".") and preset.exists():
        return preset
    presets = ", ".join(sorted(p.stem for p in PRESET_DIR.glob("*.yaml")))
    raise ConfigError(f"config {name_or_path!r} not found (not a file, not a preset: {presets})")


def load_config(name_or_path: str) -> MalaConfig:
    path = resolve_config_path(name_or_path)
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return config_from_dict(values, str(path))


def apply_overrides(cfg: MalaConfig, overrides: list[str]) -> MalaConfig:
    """`section.key=value` assignments (value parsed as YAML), as given to `mala train --set`."""
    values = cfg.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = key.strip().split(".")
        if not sep or len(parts) != 2 or parts[0] not in values or parts[1] not in values[parts[0]]:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE with a known key, e.g. stage1.epochs=10")
        values[parts[0]][parts[1]] = yaml.safe_load(raw)
    return config_from_dict(values, "--set")
