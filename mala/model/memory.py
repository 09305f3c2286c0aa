"""Normal-feature memory: the distance of each token to its nearest normal training token (as PatchCore), in one
section per category.

Our addition to MALA for the hybrid encoder (README, "Deviations"): the stage-2 map learns what synthetic
anomalies look like; the memory knows what the real normal parts look like. Each category's tokens form a section
with its own distance scale, so a category's map does not depend on what else the model was trained on. The caller
names the section (the category) or the memory routes each image to the category of its nearest training image
(cosine similarity of mean-pooled tokens).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mala.model.maps import Sections, distance_map
from mala.model.search import (Int8Shortlist, exact_squared_distance, int8_search_available,
                               shortlisted_squared_distance)

UNKNOWN = -1  # the section index of a category the memory has none for: such images are routed


@dataclass
class MemorySection:
    tokens: torch.Tensor  # (n, C) the category's normal tokens
    scale: float  # a high quantile of the category's normal distances: 1.0 means "unusual"
    image_features: torch.Tensor  # (m, C) unit-length mean tokens of its training images: what routing compares


def image_features(tokens: torch.Tensor) -> torch.Tensor:
    """Unit-length mean token (B, C) of each image's tokens (B, N, C): the image-level feature routing compares."""
    return F.normalize(tokens.float().mean(dim=1), dim=-1)


class FeatureMemory(nn.Module):
    def __init__(self, channels: int, int8_search: bool = False):
        super().__init__()
        # maps search each section through an int8 shortlist where `int8_search_available` (`model.memory_search`);
        # filling the memory (its epsilon-net, its scales) always searches exactly
        self.int8_search = int8_search
        self._shortlists: dict[int | None, Int8Shortlist] = {}  # built from the rows on first use
        self.register_buffer("tokens", torch.zeros(0, channels))
        self.register_buffer("section_ends", torch.zeros(0, dtype=torch.long))  # each section's end row
        self.register_buffer("scales", torch.ones(0))
        self.register_buffer("image_features", torch.zeros(0, channels))
        self.register_buffer("image_sections", torch.zeros(0, dtype=torch.long))
        self.ends: list[int] = []  # `section_ends` as Python numbers: constant slices for torch.export
        self.register_load_state_dict_post_hook(lambda module, _: module._mirror_ends())

    @property
    def empty(self) -> bool:
        return self.tokens.shape[0] == 0

    @property
    def section_count(self) -> int:
        return len(self.ends)

    def make_room(self, state: dict[str, torch.Tensor], prefix: str) -> None:
        """Buffers of the sizes a state dict holds (known only after training), before it is loaded."""
        for name, buffer in self.named_buffers():
            if prefix + name in state:
                setattr(self, name, buffer.new_zeros(state[prefix + name].shape))

    def fill(self, tokens: torch.Tensor, scale: float) -> None:
        """One section of `tokens` (N, C): every image's map reads them all."""
        self.fill_sections([MemorySection(tokens, scale, tokens.new_zeros(0, tokens.shape[1]))])

    def fill_sections(self, sections: list[MemorySection]) -> None:
        self.tokens = torch.cat([s.tokens.detach().float() for s in sections]).contiguous()
        sizes = torch.tensor([len(s.tokens) for s in sections])
        self.section_ends = sizes.cumsum(0).to(self.tokens.device)
        self.scales = torch.tensor([s.scale for s in sections], device=self.tokens.device)
        self.image_features = torch.cat([s.image_features.float() for s in sections]).to(self.tokens.device)
        self.image_sections = torch.cat([torch.full((len(s.image_features),), k, dtype=torch.long)
                                         for k, s in enumerate(sections)]).to(self.tokens.device)
        self._mirror_ends()

    def _mirror_ends(self) -> None:
        self.ends = self.section_ends.tolist()
        self._shortlists = {}

    def keep_only(self, section: int) -> None:
        """Drop the rows of every other section, for a graph that reads only this one (a smaller export): the section
        keeps its index, the others become empty."""
        start, rows = (self.ends[section - 1] if section else 0), self.section_rows(section).clone()
        self.tokens = rows
        self.section_ends = (self.section_ends - start).clamp(0, len(rows))
        self._mirror_ends()

    def section_rows(self, section: int | None) -> torch.Tensor:
        """The memory rows of one section; all rows for None."""
        if section is None:
            return self.tokens
        return self.tokens[(self.ends[section - 1] if section else 0):self.ends[section]]

    def nearest_distance(self, queries: torch.Tensor, section: int | None = None, shortlist: bool = False
                         ) -> torch.Tensor:
        """Euclidean distance (..., C) -> (...) of each query to its nearest token of `section` (None: all tokens);
        with `shortlist`, through the section's int8 shortlist where it is available (`mala.model.search`)."""
        flat, rows = queries.reshape(-1, queries.shape[-1]).float(), self.section_rows(section)
        if shortlist and int8_search_available(flat):
            squared = shortlisted_squared_distance(flat, rows, self.shortlist(section))
        else:
            squared = exact_squared_distance(flat, rows)
        return squared.sqrt().reshape(queries.shape[:-1])

    def shortlist(self, section: int | None) -> Int8Shortlist:
        """The int8 shortlist of a section's rows (None: of all rows), built on first use; an export builds every
        section's before it traces (`build_shortlists`: building reads values, which tracing cannot)."""
        if section not in self._shortlists:
            self._shortlists[section] = Int8Shortlist.of(self.section_rows(section))
        return self._shortlists[section]

    def build_shortlists(self) -> None:
        """Every section's `shortlist` (one for a memory of one section; none for a section `keep_only` emptied), where
        this memory searches through them."""
        if self.int8_search:
            for section in range(self.section_count):
                if len(self.section_rows(section)):
                    self.shortlist(section)

    def route(self, tokens: torch.Tensor) -> torch.Tensor:
        """The section (B,) of each image's tokens (B, N, C): that of its nearest training image."""
        if self.section_count == 1:
            return torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
        similarity = image_features(tokens) @ self.image_features.T
        return self.image_sections[similarity.argmax(dim=1)]

    def resolve(self, tokens: torch.Tensor, sections: Sections) -> Sections:
        """The sections tokens (B, N, C) are read in: the given ones, with images of unknown categories (all for
        None) routed; 0 for a memory of one section (one category, or saved before sections)."""
        if self.section_count == 1:
            return 0
        if sections is None:
            return self.route(tokens)
        if isinstance(sections, int) or torch.compiler.is_exporting() or not bool((sections == UNKNOWN).any()):
            return sections
        return torch.where(sections == UNKNOWN, self.route(tokens), sections)

    def scaled_distance(self, tokens: torch.Tensor, sections: Sections) -> torch.Tensor:
        """Nearest distance / the section's scale (B, N) of tokens (B, N, C), in the sections `resolve` gives."""
        sections = self.resolve(tokens, sections)
        if isinstance(sections, int):
            return self.nearest_distance(tokens, sections, self.int8_search) / self.scales[sections]
        if torch.compiler.is_exporting():  # every section searched, each token keeps its own: no data-dependent code
            every = torch.stack([self.nearest_distance(tokens, k, self.int8_search) / self.scales[k]
                                 for k in range(self.section_count)], dim=-1)
            return every.gather(-1, sections.view(-1, 1, 1).expand(*tokens.shape[:2], 1))[..., 0]
        distance = tokens.new_empty(tokens.shape[:2], dtype=torch.float32)
        for section in sections.unique().tolist():
            chosen = sections == section
            distance[chosen] = (self.nearest_distance(tokens[chosen], section, self.int8_search)
                                / self.scales[section])
        return distance

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int], size: tuple[int, int], sigma: float,
                sections: Sections = None) -> torch.Tensor:
        """Tokens (B, N, C) on a `grid` to a map (B, H, W) in [0, 1): distance / scale, as `maps.distance_map`."""
        return distance_map(self.grid_distance(tokens, grid, sections), size, sigma)

    def grid_distance(self, tokens: torch.Tensor, grid: tuple[int, int], sections: Sections = None) -> torch.Tensor:
        """`scaled_distance` of tokens (B, N, C) on a `grid`, as (B, 1, rows, columns)."""
        return self.scaled_distance(tokens, sections).reshape(tokens.shape[0], 1, *grid)
