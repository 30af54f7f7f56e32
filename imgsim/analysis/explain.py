"""Why two images are similar: each cell of ResNet50's 7x7 grid and its part in the similarity.

``flatten`` vectors are the 7x7x2048 feature map in (row, column, channel) order divided by its norm, so
the cosine of two of them is exactly the sum of 49 per-cell dot products: cell (i, j) of one image
against cell (i, j) of the other. Those 49 numbers are the explanation, and they add up to the cosine.

``avg`` vectors keep no spatial layout, so the two 7x7x2048 maps are computed again with the model. For
each cell of the first image the explanation gives how well it matches its best cell anywhere in the
second (cosine of the two 2,048-channel cell vectors) and where that cell is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from imgsim.errors import ImgsimError

GRID = 7
CHANNELS = 2048
TOP_CELLS = 5


@dataclass(frozen=True)
class Explanation:
    """The 7x7 ``cells`` behind a ``cosine``; ``best_match[i, j]`` is the (row, column) matched in ``avg``."""

    mode: str  # "flatten": cells sum to the cosine; "avg": best-match cosine per cell
    cosine: float
    cells: np.ndarray
    best_match: np.ndarray | None = None

    def top_share(self, n: int = TOP_CELLS) -> float:
        """Share of the similarity carried by the ``n`` strongest cells (flatten: of the positive total)."""
        c = np.sort(np.asarray(self.cells, dtype=np.float64).ravel())[::-1]
        if self.mode == "flatten":
            total = float(np.clip(c, 0, None).sum())
            return float(np.clip(c[:n], 0, None).sum() / total) if total > 0 else 0.0
        return float(c[:n].mean()) if len(c) else 0.0

    def describe(self, n: int = TOP_CELLS) -> str:
        """One sentence a person can read under the two images."""
        if self.mode == "flatten":
            return (f"The {n} strongest of the 49 cells carry {self.top_share(n):.0%} of the similarity "
                    f"(cosine {self.cosine:.3f} = the sum of all 49 cells).")
        return (f"Each cell of the first image is matched with its most similar cell of the second; the "
                f"{n} best matches have a mean cosine of {self.top_share(n):.3f} (whole images: {self.cosine:.3f}).")

    def to_json(self) -> dict:
        out = {"cosine": round(self.cosine, 6), "cells": np.round(self.cells, 6).tolist(), "mode": self.mode,
               "top_cells": TOP_CELLS, "top_share": round(self.top_share(), 6)}
        if self.best_match is not None:
            out["best_match"] = np.asarray(self.best_match).tolist()
        return out


def explain_flatten(a: np.ndarray, b: np.ndarray) -> Explanation:
    """Per-cell dot products of two unit ``flatten`` vectors; they sum to the cosine (float64)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != (GRID * GRID * CHANNELS,) or b.shape != a.shape:
        raise ImgsimError(f"A per-cell explanation needs two 7x7x2048 flatten vectors (got {a.shape} and {b.shape}).")
    cells = np.einsum("ijc,ijc->ij", a.reshape(GRID, GRID, CHANNELS), b.reshape(GRID, GRID, CHANNELS))
    return Explanation("flatten", float(a @ b), cells)


def explain_maps(map_a: np.ndarray, map_b: np.ndarray, cosine: float) -> Explanation:
    """For each cell of ``map_a`` (7x7xC), the cosine with its best-matching cell of ``map_b``."""
    fa = np.asarray(map_a, dtype=np.float64).reshape(GRID * GRID, -1)
    fb = np.asarray(map_b, dtype=np.float64).reshape(GRID * GRID, -1)
    na = np.linalg.norm(fa, axis=1, keepdims=True)
    nb = np.linalg.norm(fb, axis=1, keepdims=True)
    sim = np.divide(fa, na, out=np.zeros_like(fa), where=na > 0) @ np.divide(fb, nb, out=np.zeros_like(fb),
                                                                             where=nb > 0).T
    best = sim.argmax(axis=1)
    cells = sim[np.arange(len(sim)), best].reshape(GRID, GRID)
    where = np.stack([best // GRID, best % GRID], axis=1).reshape(GRID, GRID, 2)
    return Explanation("avg", float(cosine), cells, where)


def matched_cells(explanation: Explanation) -> np.ndarray:
    """What to draw on the second image: flatten, the same cells; avg, each cell's best score as a match."""
    if explanation.best_match is None:
        return np.asarray(explanation.cells)
    out = np.zeros((GRID, GRID))
    for (i, j), score in zip(explanation.best_match.reshape(-1, 2), np.asarray(explanation.cells).ravel()):
        out[i, j] = max(out[i, j], score)
    return out


def heat_overlay(image: Image.Image, cells: np.ndarray, alpha: float = 0.6) -> Image.Image:
    """The image with a 7x7 red overlay whose opacity follows each cell's value, from the weakest cell
    (clear) to the strongest (``alpha``), so that the cells that matter stand out."""
    im = image.convert("RGB")
    c = np.asarray(cells, dtype=np.float64)
    low, high = (float(c.min()), float(c.max())) if c.size else (0.0, 0.0)
    weight = (c - low) / (high - low) if high > low else np.zeros_like(c)
    mask = Image.fromarray(np.uint8(np.round(weight * 255 * alpha)), mode="L").resize(im.size, Image.NEAREST)
    red = Image.new("RGB", im.size, (220, 30, 30))
    out = Image.composite(red, im, mask)
    # Thin grid lines so the 49 cells read as cells.
    arr = np.asarray(out).copy()
    for k in range(1, GRID):
        arr[:, round(k * im.size[0] / GRID) - 1, :] = 255
        arr[round(k * im.size[1] / GRID) - 1, :, :] = 255
    return Image.fromarray(arr)
