"""Reciprocal rank fusion of rankings (vector, keywords): score = sum of weight / (k + rank), rank from 1.

The fusion LanceDB, Weaviate and Qdrant default to (k = 60). Each fused result keeps, per source, its rank
and its own score (a distance for vectors, a BM25 score for keywords), so a result says where it came from.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from imgsim.metadata.fields import MetadataError

#: The RRF constant: a larger k flattens the difference between the first ranks.
RRF_K = 60
#: Equal weights: neither ranking is trusted more by default.
DEFAULT_WEIGHTS = {"vector": 1.0, "keywords": 1.0}
_MAX_WEIGHT = 100.0
_MAX_TEXT = 100
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")


@dataclass(frozen=True)
class SourceHit:
    """Where one ranking placed a row (1 = first) and the score it gave it."""

    rank: int
    score: float


@dataclass(frozen=True)
class FusedHit:
    """One fused result: its row, its fused score, and its place in each ranking that has it."""

    row: int
    score: float
    sources: dict[str, SourceHit] = field(default_factory=dict)


def rrf(rankings: Mapping[str, tuple[Sequence[int], Sequence[float]]], k: int = RRF_K,
        weights: Mapping[str, float] | None = None, limit: int | None = None) -> list[FusedHit]:
    """Fuse best-first rankings, ``{source: (rows, scores)}``, into one list, best first.

    A source missing from ``weights`` weighs 1; a source of weight 0 is left out. Ties go to the row
    with the better best rank, then the lower row number, so results are repeatable.
    """
    if k < 0:
        raise ValueError(f"k must be 0 or more, not {k}")
    weights = dict(weights or {})
    fused: dict[int, float] = {}
    hits: dict[int, dict[str, SourceHit]] = {}
    for source, (rows, scores) in rankings.items():
        weight = weights.get(source, 1.0)
        if len(rows) != len(scores):
            raise ValueError(f"ranking {source!r} has {len(rows)} rows and {len(scores)} scores")
        if weight == 0:
            continue
        for rank, (row, score) in enumerate(zip(rows, scores), 1):
            row = int(row)
            if source in hits.get(row, {}):
                continue  # a row listed twice keeps its better (first) rank
            fused[row] = fused.get(row, 0.0) + weight / (k + rank)
            hits.setdefault(row, {})[source] = SourceHit(rank, float(score))
    order = sorted(fused, key=lambda r: (-fused[r], min(h.rank for h in hits[r].values()), r))
    return [FusedHit(r, fused[r], hits[r]) for r in order[:limit]]


def parse_fusion(text: str) -> dict[str, float] | None:
    """``--fusion``: ``off`` (None: no fusion), or weights such as ``vector=1,keywords=0.5``."""
    if text.strip().lower() == "off":
        return None
    weights = dict(DEFAULT_WEIGHTS)
    for part in text.split(",") if len(text) <= _MAX_TEXT else [""]:  # a longer text is refused, not cut
        name, _, value = part.partition("=")
        name = name.strip()
        # Plain ASCII decimals: float() also reads "1_0" as 10 and other scripts' digits.
        weight = float(value) if _NUMBER.fullmatch(value.strip()) else math.nan
        if name not in DEFAULT_WEIGHTS or not 0 <= weight <= _MAX_WEIGHT:
            raise MetadataError(f"--fusion takes 'off' or weights such as vector=1,keywords=0.5 (sources: "
                                f"{', '.join(DEFAULT_WEIGHTS)}; each weight 0..{_MAX_WEIGHT:g}), not {text[:60]!r}")
        weights[name] = weight
    return weights
