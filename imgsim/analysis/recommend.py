"""More like these: one query vector from several positive and negative examples (Rocchio).

``q = normalise(mean(positives)) - weight * mean(negatives)``, normalised again so that distances to it
stay on the same 0..2 scale as any other query. With one positive and no negative it is that image's own
vector, so the answer is exactly the plain query's.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

from imgsim.errors import ImgsimError

NEGATIVE_WEIGHT = 0.5


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def _mean(vectors: np.ndarray | Iterable[np.ndarray]) -> np.ndarray | None:
    """The float64 mean of example vectors added one at a time, never stacked (nor copied whole as float64):
    examples may be many large vectors; None when there are none."""
    rows = np.atleast_2d(vectors) if isinstance(vectors, np.ndarray) else vectors
    total, n = None, 0
    for row in rows:
        row = np.ravel(row)
        total = row.astype(np.float64) if total is None else np.add(total, row, out=total)
        n += 1
    return None if total is None else total / n


def rocchio(positives: np.ndarray | Iterable[np.ndarray], negatives: np.ndarray | Iterable[np.ndarray] | None = None,
            weight: float = NEGATIVE_WEIGHT) -> np.ndarray:
    """The unit query vector (float32) for positive and (optional) negative example vectors: rows of an array,
    or any iterable of vectors (read one at a time)."""
    if weight < 0:
        raise ImgsimError(f"The weight of the negatives must be >= 0 (got {weight}).")
    pos = _mean(positives)
    if pos is None:
        raise ImgsimError("More like these needs at least one positive image.")
    q = _unit(pos)
    neg = _mean(negatives) if negatives is not None else None
    if neg is not None:
        q = q - weight * neg
    return _unit(q).astype(np.float32)
