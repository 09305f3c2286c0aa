"""MALA: a masked autoencoder (stage 1) whose decoder, with the Token Balance Module, predicts anomaly maps (stage 2).

Parameter names follow facebookresearch/mae `MaskedAutoencoderViT`, so `mae_pretrain_vit_*.pth` (encoder)
and `mae_visualize_vit_*.pth` (encoder and decoder) load without renaming. Images enter in [0, 1]; the
ImageNet normalisation MAE was trained with happens inside, so exported graphs need no pre-processing.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import nn

from mala.config import ModelConfig
from mala.model.backbone import VIT_RECIPE, FeatureEmbed, FeatureTokens, TokenRecipe, layer_normed, pretrained_backbone
from mala.model.global_map import GlobalAutoencoder
from mala.model.maps import distance_map, fuse_maps, mixed_distance_map, stitch_maps
from mala.model.memory import FeatureMemory, Sections
from mala.model.tbm import TokenBalanceModule
from mala.model.vit import Block, PatchEmbed, init_vit_weights, sincos_pos_embed
from mala.sizes import check_multiple
from mala.tiling import TileGrid

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MAP_PARTS = ("learned", "distance", "score_distance", "global_distance")  # the maps of a `MapParts`, one per input
# the dims a section's first and second mirror view flip (`section_mirrors`): left-right, then up-down; the same dims
# of images (B, 3, H, W), maps (B, H, W) and grid distances (B, 1, rows, columns), so a view's maps flip straight back
MIRROR_VIEWS = ((-1,), (-2,))


@dataclass
class MaskedReconstruction:
    image: torch.Tensor  # (B, 3, H, W) reconstruction in [0, 1] space (not clamped)
    mask: torch.Tensor  # (B, N) 1 where the patch was hidden from the encoder
    features: torch.Tensor | None = None  # hybrid: (B, N, C) predicted backbone feature tokens
    target_features: torch.Tensor | None = None  # hybrid: (B, N, C) the backbone's own feature tokens


@dataclass
class MapParts:
    """What `MALA.maps` fuses: the stage-2 map, the memories' scaled distances and the global map's scaled errors
    (None where there is none)."""

    learned: torch.Tensor  # (B, H, W) the stage-2 anomaly map
    sections: Sections = None  # the memory sections the distances were read in (resolved)
    distance: torch.Tensor | None = None  # (B, 1, rows, columns) on the memory's grid
    score_distance: torch.Tensor | None = None  # the same on the score memory's grid
    global_distance: torch.Tensor | None = None  # the global map's errors on the memory's grid
    grid: TileGrid | None = None  # the parts are of this grid's tiles (each image's in turn): fused, they are stitched
    # averaged over mirror views (`MALA.mirrored`): the parts of the inputs as they are, which the image score's map
    # reads (the views were chosen for the anomaly map; averaged, the score's maximum lost 0.6 validation image AUROC)
    plain: MapParts | None = None

    def maps(self) -> dict[str, torch.Tensor]:
        """The parts' maps that are there, by name (`MAP_PARTS`)."""
        return {name: value for name in MAP_PARTS if (value := getattr(self, name)) is not None}

    def flipped(self, dims: tuple[int, ...]) -> MapParts:
        """Every map flipped along `dims` (a mirror view's parts, mirrored back)."""
        return dataclasses.replace(self, **{name: value.flip(dims) for name, value in self.maps().items()})

    def averaged_with(self, views: list[MapParts], weights: list[float | torch.Tensor]) -> MapParts:
        """The mean of these parts and of other `views` of the same inputs, each view weighed by its weight (a number,
        or one per input (B,): 1 where an input takes it, 0 where not)."""
        def weigh(weight: float | torch.Tensor, value: torch.Tensor) -> float | torch.Tensor:
            shaped = isinstance(weight, torch.Tensor) and weight.dim() == 1
            return weight.view(-1, *[1] * (value.dim() - 1)) if shaped else weight

        averaged = {}
        for name, value in self.maps().items():
            total = value + sum(weigh(w, getattr(v, name)) * getattr(v, name) for v, w in zip(views, weights))
            averaged[name] = total / (1 + sum(weigh(w, value) for w in weights))
        return dataclasses.replace(self, **averaged)


def visible_patch_count(num_patches: int, mask_ratio: float) -> int:
    """Patches the encoder sees at `mask_ratio`, rounded (196 at 0.7: 59); truncation would hide one too many."""
    return round(num_patches * (1 - mask_ratio))


def check_image_size(cfg: ModelConfig) -> None:
    """A one-line ConfigError when `image_size` does not fit the patches (or the backbone's stride)."""
    why = "the patch size" if cfg.backbone == "none" else f"patch size {cfg.patch_size} and the backbone's strides"
    check_multiple(cfg.image_shape, cfg.size_multiple, why)


class MALA(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        check_image_size(cfg)
        self.cfg = cfg
        self.encoder_frozen = False  # set by `set_stage`
        self.patch_size = cfg.patch_size
        self.image_shape, self.grid = cfg.image_shape, cfg.token_grid  # (height, width), (rows, columns)
        self.memory_grid = cfg.memory_grid
        self.memory_recipe = TokenRecipe(cfg.memory_pool, cfg.memory_norm)  # the memory's tokens
        self.num_patches = num_patches = self.grid[0] * self.grid[1]
        self.num_memory_tokens = self.memory_grid[0] * self.memory_grid[1]  # per image, on the memory's grid
        self.score_memory_grid = cfg.score_memory_grid
        self.num_score_memory_tokens = self.score_memory_grid[0] * self.score_memory_grid[1]

        # encoder: pixel patches (the paper), or the hybrid's frozen ImageNet backbone features
        self.feature_tokens: FeatureTokens | None = None
        if cfg.backbone == "none":
            self.patch_embed = PatchEmbed(cfg.patch_size, 3, cfg.embed_dim)
        else:
            backbone = pretrained_backbone(cfg.backbone, last_stage=max(cfg.backbone_stages))
            self.feature_tokens = FeatureTokens(backbone, tuple(cfg.backbone_stages), cfg.patch_size)
            self.patch_embed = FeatureEmbed(self.feature_tokens.channels, cfg.embed_dim)
            self.memory = FeatureMemory(self.feature_tokens.channels)
            # the image score's memory (`score_memory`): the memory's tokens, layer-normed, on its own grid
            self.score_memory = FeatureMemory(self.feature_tokens.channels) if cfg.score_memory else None
            self.set_memory_search(cfg.memory_search)
            # the global map (`global_map`): the memory's tokens rebuilt from the whole image
            self.global_map = (GlobalAutoencoder(self.feature_tokens.channels, self.memory_grid)
                               if cfg.global_map else None)
            # per memory section (S, 3): memory_weight, score_map_share and global_share as `mala tune` chose them
            # for the section's category on its training images; empty: the config's for every section
            self.register_buffer("section_fusion", torch.zeros(0, 3))
            # per memory section (S,): its anomaly map's normal level, the 99 % quantile of the tuned fusion's map over
            # the category's held-out normal images; each map is divided by it, so that a map means the same in every
            # category (an image read in another category's section is not put out of scale); empty: not levelled
            self.register_buffer("section_map_levels", torch.zeros(0))
            # per memory section (S,): how many of `MIRROR_VIEWS` its images are also mapped in, the maps of every view
            # averaged (test-time flips), as tuning chose within `run.mirror_gflops`; empty: none. `mirror_counts`
            # holds the same as Python numbers, which a graph's shape may depend on where a tensor's value may not
            self.register_buffer("section_mirrors", torch.zeros(0, dtype=torch.long))
            self.mirror_counts: tuple[int, ...] = ()
            self.register_load_state_dict_post_hook(_count_mirrors)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, cfg.embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.embed_dim, eps=1e-6)

        # decoder
        self.decoder_embed = nn.Linear(cfg.embed_dim, cfg.decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(
            torch.zeros(1, num_patches + 1, cfg.decoder_embed_dim), requires_grad=False
        )
        self.decoder_blocks = nn.ModuleList(
            Block(cfg.decoder_embed_dim, cfg.decoder_num_heads, cfg.mlp_ratio) for _ in range(cfg.decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(cfg.decoder_embed_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(cfg.decoder_embed_dim, cfg.patch_size**2 * 3)
        if self.hybrid:  # stage 1's feature target (`stage1.target`): the masked tokens' backbone features
            self.decoder_feature_pred = nn.Linear(cfg.decoder_embed_dim, self.feature_tokens.channels)

        # stage 2: two-channel map per patch
        first_dim = self.feature_tokens.channels if self.tbm_reads_backbone else cfg.embed_dim
        self.tbm = TokenBalanceModule(
            cfg.embed_dim, cfg.decoder_embed_dim, 2 * cfg.patch_size**2, use_encoder_tokens=cfg.use_tbm,
            first_dim=first_dim,
        )

        self.register_buffer("pixel_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self._init_weights()

    def _init_weights(self) -> None:
        self.reset_position_embeddings()
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for name, module in self.named_children():
            if name != "feature_tokens":  # the backbone keeps its ImageNet weights
                module.apply(init_vit_weights)
        nn.init.xavier_uniform_(self.patch_embed.proj.weight.view(self.patch_embed.proj.weight.shape[0], -1))

    def reset_position_embeddings(self) -> None:
        """Regenerate the fixed sine-cosine embeddings (also after loading a checkpoint of another size)."""
        with torch.no_grad():
            self.pos_embed.copy_(sincos_pos_embed(self.cfg.embed_dim, self.grid))
            self.decoder_pos_embed.copy_(sincos_pos_embed(self.cfg.decoder_embed_dim, self.grid))

    # ----- parameter groups -------------------------------------------------------------------------

    def encoder_modules(self) -> list[nn.Module]:
        """The ViT encoder's trained parts (the hybrid's backbone is not one: it never trains)."""
        return [self.patch_embed, *self.blocks, self.norm]

    def encoder_parameters(self) -> list[nn.Parameter]:
        return [self.cls_token, self.pos_embed] + [p for m in self.encoder_modules() for p in m.parameters()]

    def decoder_parameters(self) -> list[nn.Parameter]:
        modules = [self.decoder_embed, *self.decoder_blocks, self.decoder_norm]
        return [self.decoder_pos_embed] + [p for m in modules for p in m.parameters()]

    @staticmethod
    def no_weight_decay() -> set[str]:
        """Parameters AdamW's decay must not pull to zero besides biases and norms: the tokens (and the fixed
        position embeddings, which never train)."""
        return {"cls_token", "mask_token", "pos_embed", "decoder_pos_embed"}

    def set_stage(self, stage: int) -> None:
        """Stage 1 trains encoder, decoder and pixel head; stage 2 freezes the encoder and trains decoder and TBM."""
        fixed = {id(self.pos_embed), id(self.decoder_pos_embed)}
        stage1 = set(map(id, self.encoder_parameters() + self.decoder_parameters()))
        heads = [self.decoder_pred] + ([self.decoder_feature_pred] if self.hybrid else [])
        stage1 |= {id(self.mask_token)} | {id(p) for head in heads for p in head.parameters()}
        stage2 = set(map(id, self.decoder_parameters() + list(self.tbm.parameters())))
        trainable = stage1 if stage == 1 else stage2
        for parameter in self.parameters():
            parameter.requires_grad_(id(parameter) in trainable and id(parameter) not in fixed)
        self.encoder_frozen = stage == 2
        self.train(self.training)

    def train(self, mode: bool = True) -> MALA:
        """nn.Module.train, except that a frozen encoder (stage 2) stays in eval mode: dropout, drop-path or batch
        norm can never change the tokens the decoder learns from."""
        super().train(mode)
        if self.encoder_frozen:
            frozen = self.encoder_modules() + ([self.feature_tokens] if self.hybrid else [])
            for module in frozen:
                module.train(False)
        return self

    # ----- shared pieces ----------------------------------------------------------------------------

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return (images - self.pixel_mean) / self.pixel_std

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) to (B, N, p*p*C), MAE's patch order (row by row)."""
        batch, channels, _, _ = images.shape
        p, (rows, columns) = self.patch_size, self.grid
        x = images.reshape(batch, channels, rows, p, columns, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(batch, rows * columns, p * p * channels)

    def unpatchify(self, tokens: torch.Tensor, channels: int) -> torch.Tensor:
        """(B, N, p*p*C) to (B, C, H, W)."""
        batch = tokens.shape[0]
        p, (rows, columns) = self.patch_size, self.grid
        x = tokens.reshape(batch, rows, columns, p, p, channels)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(batch, channels, rows * p, columns * p)

    @property
    def hybrid(self) -> bool:
        return self.feature_tokens is not None

    @property
    def tbm_reads_backbone(self) -> bool:
        """Whether Z_enc_first of eq. 5 is the backbone's feature tokens (`tbm_tokens: backbone`, hybrid only)."""
        return self.hybrid and self.cfg.tbm_tokens == "backbone"

    def prepare_to_load(self, state: dict[str, torch.Tensor]) -> None:
        """Make room for the normal-feature memory a state dict holds (its size is known only after training), and
        give a hybrid saved before the stage-1 feature head existed a fresh one (inference never uses it); a model
        saved before `mala tune` existed has no per-section fusion (the config's holds), one saved before the global
        map none of its share (0), one saved before the map levels none (its maps stay as they were)."""
        if self.hybrid:
            upgrade_fusion(state)
            self.section_fusion = self.section_fusion.new_zeros(state["section_fusion"].shape)
            state.setdefault("section_map_levels", torch.zeros(0))  # saved before the levels: not levelled
            self.section_map_levels = self.section_map_levels.new_zeros(state["section_map_levels"].shape)
            state.setdefault("section_mirrors", torch.zeros(0, dtype=torch.long))  # saved before mirror views: none
            self.section_mirrors = self.section_mirrors.new_zeros(state["section_mirrors"].shape)
            upgrade_single_memory(state)
            self.memory.make_room(state, "memory.")
            if self.score_memory is not None:
                self.score_memory.make_room(state, "score_memory.")
            if self.global_map is not None:
                self.global_map.make_room(state, "global_map.")
        if self.hybrid and "decoder_feature_pred.weight" not in state:
            state.update({f"decoder_feature_pred.{k}": v for k, v in self.decoder_feature_pred.state_dict().items()})

    def _embed_patches(self, images: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        if self.hybrid:
            features = self.feature_tokens(images) if features is None else features
            return self.patch_embed(features) + self.pos_embed[:, 1:, :]
        return self.patch_embed(self.normalize(images)) + self.pos_embed[:, 1:, :]

    def _prepend_cls(self, tokens: torch.Tensor) -> torch.Tensor:
        cls = (self.cls_token + self.pos_embed[:, :1, :]).expand(tokens.shape[0], -1, -1)
        return torch.cat([cls, tokens], dim=1)

    def _run_decoder(self, tokens: torch.Tensor) -> torch.Tensor:
        """Decoder blocks over (B, 1+N, D_dec) tokens with position embeddings; returns normed tokens."""
        x = tokens + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_norm(x)

    # ----- stage 1: masked reconstruction ------------------------------------------------------------

    @staticmethod
    def random_masking(
        tokens: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Keep a random (1 - mask_ratio) share of each image's tokens, as MAE does (per-sample shuffle).

        `noise` (B, L): the tokens with the lowest values are kept; drawn here when not given (the trainer gives
        it so that data-parallel ranks mask as one process with the whole batch would)."""
        batch, length, dim = tokens.shape
        keep = visible_patch_count(length, mask_ratio)
        noise = torch.rand(batch, length, device=tokens.device) if noise is None else noise.to(tokens.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        kept = torch.gather(tokens, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
        mask = torch.ones(batch, length, device=tokens.device)
        mask[:, :keep] = 0
        return kept, torch.gather(mask, 1, ids_restore), ids_restore

    def reconstruct(
        self, images: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None
    ) -> MaskedReconstruction:
        """Encode the visible patches, decode the whole image (mask_ratio 0: the full image is seen); the hybrid also
        predicts every token's backbone features."""
        features = self.feature_tokens(images) if self.hybrid else None
        tokens, mask, ids_restore = self.random_masking(self._embed_patches(images, features), mask_ratio, noise)
        x = self._prepend_cls(tokens)
        for block in self.blocks:
            x = block(x)
        x = self.decoder_embed(self.norm(x))

        hidden = ids_restore.shape[1] + 1 - x.shape[1]
        patches = torch.cat([x[:, 1:, :], self.mask_token.expand(x.shape[0], hidden, -1)], dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, x.shape[2]))
        decoded = self._run_decoder(torch.cat([x[:, :1, :], patches], dim=1))
        pixels = self.unpatchify(self.decoder_pred(decoded[:, 1:, :]), 3)
        predicted = self.decoder_feature_pred(decoded[:, 1:, :]) if self.hybrid else None
        return MaskedReconstruction(pixels * self.pixel_std + self.pixel_mean, mask, predicted, features)

    # ----- stage 2: end-to-end anomaly map --------------------------------------------------------------

    def backbone_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The hybrid's backbone feature tokens on the ViT's grid, on the memory's (`memory_stride`, by its recipe)
        and, layer-normed, on the score memory's (`score_memory_stride`; None without a score memory), from one
        pass of the backbone; the same tensor where grids and recipes agree."""
        grids = [(self.patch_size, VIT_RECIPE), (self.cfg.memory_token_stride, self.memory_recipe)]
        if self.score_memory is not None:
            grids.append((self.cfg.score_memory_token_stride, self.memory_recipe))
        distinct = list(dict.fromkeys(grids))
        tokens = dict(zip(distinct, self.feature_tokens.at_strides(images, tuple(distinct))))
        for_score = layer_normed(tokens[grids[2]]) if len(grids) == 3 else None
        return tokens[grids[0]], tokens[grids[1]], for_score

    def memory_features(self, images: torch.Tensor) -> torch.Tensor:
        """The feature tokens (B, memory rows x columns, C) the normal-feature memory holds and searches."""
        return self.backbone_tokens(images)[1]

    def route(self, images: torch.Tensor) -> torch.Tensor:
        """The memory section (B,) each whole image is routed to: that of its nearest training image."""
        return self.memory.route(self.memory_features(images))

    @property
    def memories(self) -> list[tuple[FeatureMemory, int]]:
        """The hybrid's normal-feature memories with their tokens per image, in `backbone_tokens`' order: the memory,
        then the score memory if it has one."""
        held = [(self.memory, self.num_memory_tokens)]
        return held + ([(self.score_memory, self.num_score_memory_tokens)] if self.score_memory is not None else [])

    def set_memory_search(self, kind: str) -> None:
        """Search every memory as `model.memory_search` says: "int8" (the shortlist, in CPU inference and the ONNX
        export) or "exact" (float32 products throughout)."""
        for memory, _ in self.memories:
            memory.int8_search = kind == "int8"

    def score_memory_features(self, images: torch.Tensor) -> torch.Tensor:
        """The layer-normed feature tokens (B, score memory rows x columns, C) the score memory holds and searches."""
        return self.backbone_tokens(images)[2]

    def encode_full(self, images: torch.Tensor, features: torch.Tensor | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Patch tokens after the first encoder block and after the last (normed), on the whole image (both the
        embedded tokens at depth 0), and the hybrid's backbone feature tokens (None for the pixel ViT; computed
        here unless given)."""
        if self.hybrid and features is None:
            features = self.feature_tokens(images)
        x = self._prepend_cls(self._embed_patches(images, features))
        first = x = self.blocks[0](x) if len(self.blocks) else x
        for block in self.blocks[1:]:
            x = block(x)
        return first[:, 1:, :], self.norm(x), features

    def logits_and_features(self, images: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """`map_logits` and the backbone's tokens on the memory's and the score memory's grids (`backbone_tokens`;
        None for the pixel ViT)."""
        features, remembered, for_score = self.backbone_tokens(images) if self.hybrid else (None, None, None)
        with torch.no_grad():  # the encoder is frozen in stage 2
            enc_first, enc_last, features = self.encode_full(images, features)
        if self.tbm_reads_backbone:
            enc_first = features
        dec_last = self._run_decoder(self.decoder_embed(enc_last))[:, 1:, :]
        return self.unpatchify(self.tbm(enc_first, enc_last[:, 1:, :], dec_last), 2), remembered, for_score

    def map_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Two-channel logits Y (B, 2, H, W); channel 0 of softmax(Y) is the anomaly map."""
        return self.logits_and_features(images)[0]

    def forward(self, images: torch.Tensor, sections: Sections = None) -> torch.Tensor:
        """Anomaly map (B, H, W) in [0, 1] for images (B, 3, H, W) in [0, 1] (`maps`' first)."""
        return self.maps(images, sections)[:, 0]

    def maps(self, images: torch.Tensor, sections: Sections = None) -> torch.Tensor:
        """(B, 2, H, W) for images (B, 3, H, W) in [0, 1]: the anomaly map, in [0, 1], and the map the image score
        reads (`maps_and_sections`' first)."""
        return self.maps_and_sections(images, sections)[0]

    def maps_and_sections(self, images: torch.Tensor, sections: Sections = None) -> tuple[torch.Tensor, Sections]:
        """`maps` (`fused_maps` of `map_parts`, with the images' sections' `fusion_of`) and the memory sections they
        were read in (resolved, routed from the maps' own backbone pass; None where no memory was read)."""
        parts = self.mirrored(images, self.map_parts(images, sections))
        return self.fused_maps(parts, *self.fusion_of(parts.sections)), parts.sections

    def map_parts(self, images: torch.Tensor, sections: Sections = None, every_part: bool = False) -> MapParts:
        """What the maps are fused from: the stage-2 map and, when the hybrid's memory is on (`memory_weight` > 0),
        each memory's scaled distances on its grid and the trained global map's scaled errors, read in the images'
        categories' sections (`sections`: their indices; None: routed). The global map is left out where every
        image's fusion gives it share 0 (the maps are the same), unless `every_part` (tuning weighs every share)."""
        logits, features, for_score = self.logits_and_features(images)
        learned = torch.softmax(logits, dim=1)[:, 0]
        if features is None or self.cfg.memory_weight == 0 or self.memory.empty:
            return MapParts(learned)
        sections = self.memory.resolve(features, sections)  # routed once: every part reads the same category
        parts = MapParts(learned, sections, self.memory.grid_distance(features, self.memory_grid, sections))
        if self.score_memory is not None and not self.score_memory.empty:
            parts.score_distance = self.score_memory.grid_distance(for_score, self.score_memory_grid, sections)
        if self._reads_global_map(sections, every_part):
            parts.global_distance = self.global_map.grid_distance(features, sections)
        return parts

    def mirror_view(self, images: torch.Tensor, sections: Sections, dims: tuple[int, ...], every_part: bool = False
                    ) -> MapParts:
        """`map_parts` of the images mirrored along `dims` (one of `MIRROR_VIEWS`), mirrored back."""
        return self.map_parts(images.flip(dims), sections, every_part).flipped(dims)

    def mirrored(self, images: torch.Tensor, parts: MapParts) -> MapParts:
        """The `parts` of `images` averaged with those of the images' mirror views, as many as each image's section
        takes (`section_mirrors`); the parts as they are where no section takes one."""
        views = self.mirror_views_of(parts.sections)
        if views == 0:
            return parts
        taken = per_image(self.section_mirrors, parts.sections, 0)
        mirrored = [self.mirror_view(images, parts.sections, dims) for dims in MIRROR_VIEWS[:views]]
        averaged = parts.averaged_with(mirrored, [(taken >= view).float() for view in range(1, views + 1)])
        return dataclasses.replace(averaged, plain=parts)

    def mirror_views_of(self, sections: Sections) -> int:
        """The most mirror views images in `sections` (resolved) take; in an export of routed images, the most any
        section takes (a graph computes the same views for every input, weighing them per image)."""
        if sections is None or not self.mirror_counts:
            return 0
        if isinstance(sections, int):
            return self.mirror_counts[sections]
        read = range(len(self.mirror_counts)) if torch.compiler.is_exporting() else sections.unique().tolist()
        return max(self.mirror_counts[section] for section in read)

    def set_section_mirrors(self, mirrors: torch.Tensor) -> None:
        """Each section's mirror views (S,), as tuning chose them."""
        self.section_mirrors = mirrors.to(self.section_mirrors)
        _count_mirrors(self, None)

    def _reads_global_map(self, sections: Sections, every_part: bool) -> bool:
        """Whether images in `sections` (resolved) need the trained global map: for `every_part`, or where their
        fusion gives it a share; an exported graph always computes it (its shares are weights, not branches)."""
        if self.global_map is None or not self.global_map.trained:
            return False
        if every_part or torch.compiler.is_exporting():
            return True
        return bool(torch.as_tensor(self.fusion_of(sections)[2]).ne(0).any())

    def fused_maps(self, parts: MapParts, weight: float | torch.Tensor, share: float | torch.Tensor,
                   global_share: float | torch.Tensor = 0.0, levelled: bool = True) -> torch.Tensor:
        """`maps` from its parts: the stage-2 map fused with the memory's map (`weight` of it), the memory's distances
        taking `share` of the score memory's, the stage-2 map taking `global_share` of the global map's; the score's
        map is the stage-2 map fused with the score memory's map (`score_memory_weight`), or the anomaly map without a
        score memory. Where tuning set them and `levelled`, the anomaly map is `levelled` by its sections' normal
        levels (tuning reads it without, to set them). Parts of tiles give the images' stitched maps."""
        anomaly, scored = self._unlevelled_pair(parts, weight, share, global_share)
        if levelled and parts.distance is not None:
            anomaly = self.levelled(anomaly, parts.sections)
        maps = torch.stack([anomaly, anomaly if scored is None else scored], dim=1)
        return maps if parts.grid is None else stitch_maps(maps, parts.grid)

    def _unlevelled_pair(self, parts: MapParts, weight: float | torch.Tensor, share: float | torch.Tensor,
                         global_share: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The anomaly map, not levelled, and the score's map (None: the anomaly map's) of each model input the parts
        are of (an image, or a tile), not stitched."""
        learned, sigma, size = parts.learned, self.cfg.memory_sigma, self.image_shape
        if parts.distance is None:
            return learned, learned
        seen = learned
        if parts.global_distance is not None:  # unblurred: its errors are already smooth, from one latent
            seen = fuse_maps(learned, distance_map(parts.global_distance, size, 0.0), global_share)
        if parts.score_distance is None:
            return fuse_maps(seen, distance_map(parts.distance, size, sigma), weight), None
        remembered = mixed_distance_map([(parts.distance, 1 - share), (parts.score_distance, share)], size, sigma)
        return fuse_maps(seen, remembered, weight), self._score_map(parts.plain or parts)

    def _score_map(self, parts: MapParts) -> torch.Tensor:
        """The image score's map: the stage-2 map fused with the score memory's (`score_memory_weight`)."""
        remembered = distance_map(parts.score_distance, self.image_shape, self.cfg.memory_sigma)
        return fuse_maps(parts.learned, remembered, self.cfg.score_memory_weight)

    def levelled(self, anomaly: torch.Tensor, sections: Sections) -> torch.Tensor:
        """Anomaly maps (B, H, W) in [0, 1) of images read in `sections` (resolved), each x / (x + its section's
        normal level): in [0, 1) still, 0.5 at the level, in the same order within a category; unchanged without
        levels."""
        if sections is None or self.section_map_levels.shape[0] == 0:
            return anomaly
        level = per_image(self.section_map_levels, sections, 2)
        return anomaly / (anomaly + level)

    def fusion_of(self, sections: Sections) -> tuple[float | torch.Tensor, ...]:
        """`memory_weight`, `score_map_share` and `global_share` of images in `sections` (resolved: one index, or one
        per image, then shaped (B, 1, 1), (B, 1, 1, 1) and (B, 1, 1) to weigh maps and grid distances; None: no
        memory read): the section's own where `mala tune` set them, else the config's."""
        if sections is None or self.section_fusion.shape[0] == 0:
            return self.cfg.memory_weight, self.cfg.score_map_share, self.cfg.global_share
        columns = self.section_fusion.unbind(-1)  # the grid distances the share weighs have one more dimension
        return tuple(per_image(values, sections, dims) for values, dims in zip(columns, (2, 3, 2)))

    def memory_map(self, features: torch.Tensor, sections: Sections = None) -> torch.Tensor:
        """The normal-feature memory's map (B, H, W) of backbone feature tokens (B, N, C) on the memory's grid."""
        return self.memory(features, self.memory_grid, self.image_shape, self.cfg.memory_sigma, sections)


def _count_mirrors(model: MALA, _incompatible_keys: object) -> None:
    """`mirror_counts` read from the `section_mirrors` buffer (after a state dict loads)."""
    model.mirror_counts = tuple(model.section_mirrors.tolist())


def per_image(values: torch.Tensor, sections: Sections, dims: int) -> torch.Tensor:
    """A per-section buffer's values (S,) for images read in `sections` (resolved, not None): one value for one
    index, else (B,) shaped to weigh (B, ...) maps of `dims` more dimensions."""
    chosen = values[sections]
    return chosen if isinstance(sections, int) else chosen.view(-1, *[1] * dims)


def upgrade_fusion(state: dict[str, torch.Tensor]) -> None:
    """A state dict's per-section fusion as (S, 3): none before `mala tune` existed, no global share (0) before the
    global map."""
    fusion = state.setdefault("section_fusion", torch.zeros(0, 3))
    if fusion.shape[1] == 2:
        state["section_fusion"] = torch.cat([fusion, fusion.new_zeros(len(fusion), 1)], dim=1)


def upgrade_single_memory(state: dict[str, torch.Tensor]) -> None:
    """A state dict saved before the memory had sections (one `memory.scale`) as a memory of one section."""
    if "memory.scale" not in state:
        return
    scale, tokens = state.pop("memory.scale"), state["memory.tokens"]
    state |= {"memory.scales": scale.reshape(1), "memory.section_ends": torch.tensor([len(tokens)]),
              "memory.image_features": tokens.new_zeros(0, tokens.shape[1]),
              "memory.image_sections": torch.zeros(0, dtype=torch.long)}
