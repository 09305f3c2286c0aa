"""Nearest-neighbour search over a memory's rows: exact float32 products, or an int8 shortlist re-ranked exactly.

On a CPU with int8 dot-product instructions an int8 matrix product runs several times faster than float32's (4.7
times on our AVX-512 VNNI cores). The shortlist takes, from each block of `BLOCK` rows, the row nearest a query by int8
arithmetic, and re-ranks those few candidates in float32: the distance returned is always an exact distance to a
real row, equal to the exact search's minimum unless the int8 error swapped two rows of nearly the same distance
(BENCHMARKS.md "An int8 shortlist for the memory search").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

BLOCK = 2048  # memory rows per product: a batch-1 (queries x rows) block stays in cache (2x faster than 16k)
QUERY_BLOCK = 1024  # queries per shortlist: bounds the (queries x candidates x channels) re-rank
INT8_MAX = 127
K_MULTIPLE = 8  # int8 products want the inner dimension a multiple of 8


def exact_squared_distance(queries: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distance (Q,) of each query (Q, C) to its nearest row (N, C), float32 products."""
    best = None
    for start in range(0, rows.shape[0], BLOCK):
        block = rows[start:start + BLOCK]
        # |q - r|^2 less |q|^2, which does not change the minimum over r and is added once after it
        partial = torch.addmm((block * block).sum(1), queries, block.T, alpha=-2).amin(dim=1)
        best = partial if best is None else torch.minimum(best, partial)
    return (best + (queries * queries).sum(1)).clamp_min(0)


def int8_search_available(queries: torch.Tensor) -> bool:
    """Whether the int8 shortlist can serve these queries: CPU inference (a GPU and gradients take the exact search)
    with torch's int8 product; an ONNX export writes it as onnxruntime's `MatMulInteger` (`mala.deploy.graph`)."""
    return queries.device.type == "cpu" and not queries.requires_grad and hasattr(torch, "_int_mm")


@dataclass(frozen=True)
class Int8Shortlist:
    """Rows centred on their mean and quantised with one step, each followed by int8 columns that hold
    |row|^2 / (2 step^2); a query quantised with the same step holds `INT8_MAX` and 1 in those columns, so one int8
    product gives q.r - |r|^2 / 2 (in step^2 units), whose largest value is the row nearest the query."""

    mean: torch.Tensor  # (C,)
    step: float
    blocks: list[torch.Tensor]  # (C + norm columns, rows) int8, one per `BLOCK` rows
    norm_columns: int  # the columns of INT8_MAX that carry |row|^2 / (2 step^2) / INT8_MAX; one more of 1 follows
    query_tail: torch.Tensor  # (1, columns after the channels) int8: a query's INT8_MAX and 1, then the padding

    @classmethod
    def of(cls, rows: torch.Tensor) -> Int8Shortlist:
        mean = rows.mean(dim=0)
        centred = rows - mean
        step = max(centred.abs().max().item(), 1e-12) / INT8_MAX
        quantised = (centred / step).round().to(torch.int8)
        half_norm = ((centred * centred).sum(1) / (2 * step * step)).round().long()
        high, low = half_norm.div(INT8_MAX, rounding_mode="floor"), half_norm.remainder(INT8_MAX)
        norm_columns = max(1, -(-int(high.max()) // INT8_MAX))
        # high spread over columns of at most INT8_MAX each
        spread = (high[:, None] - INT8_MAX * torch.arange(norm_columns)).clamp(0, INT8_MAX)
        columns = torch.cat([quantised, -spread.to(torch.int8), -low.to(torch.int8)[:, None]], dim=1)
        columns = torch.nn.functional.pad(columns, (0, -columns.shape[1] % K_MULTIPLE))
        blocks = [columns[start:start + BLOCK].T.contiguous() for start in range(0, len(rows), BLOCK)]
        tail = torch.zeros(1, columns.shape[1] - rows.shape[1], dtype=torch.int8)
        tail[0, :norm_columns], tail[0, norm_columns] = INT8_MAX, 1
        return cls(mean, step, blocks, norm_columns, tail)

    def quantised_queries(self, queries: torch.Tensor) -> torch.Tensor:
        """Queries (Q, C) in the rows' int8 columns; values beyond the rows' range are clipped."""
        quantised = ((queries - self.mean) / self.step).round().clamp(-INT8_MAX, INT8_MAX).to(torch.int8)
        return torch.cat([quantised, self.query_tail.expand(queries.shape[0], -1)], dim=1)

    def candidates(self, queries: torch.Tensor) -> torch.Tensor:
        """Row indices (Q, blocks): each block's row nearest each query (Q, C) by the int8 product."""
        quantised = self.quantised_queries(queries)
        return torch.stack([torch._int_mm(quantised, block).argmax(dim=1) + k * BLOCK
                            for k, block in enumerate(self.blocks)], dim=1)


def shortlisted_squared_distance(queries: torch.Tensor, rows: torch.Tensor, shortlist: Int8Shortlist
                                 ) -> torch.Tensor:
    """Squared distance (Q,) of each query (Q, C) to its nearest shortlisted row, computed exactly in float32."""
    parts = []
    # an exported graph's query count depends on its batch, so it takes them in one block
    for block in [queries] if torch.compiler.is_exporting() else queries.split(QUERY_BLOCK):
        chosen = rows[shortlist.candidates(block)]  # (q, blocks, C)
        parts.append((chosen - block[:, None]).square().sum(-1).amin(dim=1))
    return torch.cat(parts)
