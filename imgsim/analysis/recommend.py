"""More like these: one query vector from several positive and negative examples (Rocchio).

``q = normalise(mean(positives)) - weight * mean(negatives)``, normalised again so that distances to it
stay on the same 0..2 scale as any other query. With one positive and no negative it is that image's own
vector, so the answer is exactly the plain query's.
"""

from __future__ import annotations

import numpy as np

from imgsim.errors import ImgsimError

NEGATIVE_WEIGHT = 0.5


def _unit(v: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v / norm if norm > 0 else v


def rocchio(positives: np.ndarray, negatives: np.ndarray | None = None, weight: float = NEGATIVE_WEIGHT
            ) -> np.ndarray:
    """The unit query vector (float32) for rows of positive and (optional) negative example vectors."""
    pos = np.atleast_2d(np.asarray(positives, dtype=np.float64))
    if pos.size == 0 or len(pos) == 0:
        raise ImgsimError("More like these needs at least one positive image.")
    if weight < 0:
        raise ImgsimError(f"The weight of the negatives must be >= 0 (got {weight}).")
    q = _unit(pos.mean(axis=0))
    if negatives is not None and len(negatives):
        q = q - weight * np.atleast_2d(np.asarray(negatives, dtype=np.float64)).mean(axis=0)
    return _unit(q).astype(np.float32)
