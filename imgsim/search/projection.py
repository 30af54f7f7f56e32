"""PCA compression of feature vectors: the compact coordinates used to prune search and to draw the map."""

from __future__ import annotations

import numpy as np


class PCAProjection:
    """An orthonormal PCA basis fitted on (a sample of) the vectors.

    Because the basis is orthonormal, the distance between two projections never exceeds the distance
    between the vectors; together with the residual norms this gives the lower bound that lets
    :class:`imgsim.search.exact.ExactSearch` skip most vectors and still return exact neighbours.
    """

    def __init__(self, n_components: int = 256, sample_size: int = 2048, random_state: int = 0):
        self.n_components = n_components
        self.sample_size = sample_size
        self.random_state = random_state

    def fit(self, vectors: np.ndarray) -> "PCAProjection":
        """Fit on up to ``sample_size`` rows; ``n_components_`` is clamped to what the sample supports."""
        n, d = vectors.shape
        self._basis32 = self._basis64 = None  # derived from the basis fitted here
        rows = np.arange(n)
        if n > self.sample_size:
            rows = np.sort(np.random.default_rng(self.random_state).choice(n, self.sample_size, replace=False))
        sample = np.asarray(vectors[rows], dtype=np.float32)
        self.n_components_ = int(max(0, min(self.n_components, d, len(sample) - 1)))
        self.mean_ = sample.mean(axis=0, dtype=np.float64).astype(np.float32) if n else np.zeros(d, np.float32)
        if self.n_components_ == 0:
            self.components_ = np.zeros((0, d), dtype=np.float32)
            self.explained_variance_ratio_ = np.zeros(0)
            return self
        from sklearn.decomposition import PCA  # imported here: browsing an index never pays for scikit-learn

        pca = PCA(n_components=self.n_components_, random_state=self.random_state).fit(sample)
        self.mean_ = pca.mean_.astype(np.float32)
        self.components_ = pca.components_.astype(np.float32)
        self.explained_variance_ratio_ = pca.explained_variance_ratio_
        return self

    @classmethod
    def from_arrays(cls, components: np.ndarray, mean: np.ndarray) -> "PCAProjection":
        """Rebuild a fitted projection from stored arrays."""
        self = cls(n_components=len(components))
        self.components_ = np.asarray(components, dtype=np.float32)
        self.mean_ = np.asarray(mean, dtype=np.float32)
        self.n_components_ = len(components)
        return self

    def transform(self, vectors: np.ndarray, chunk_rows: int = 256, precise: bool = True
                  ) -> tuple[np.ndarray, np.ndarray]:
        """Projections ``(n, n_components_)`` and residual norms ``(n,)`` (computed in float64, stored float32).

        ``precise=False`` computes in float32: approximate search needs no guaranteed bounds, and it is
        several times faster on millions of rows.
        """
        n = len(vectors)
        if not precise:
            projected = np.empty((n, self.n_components_), dtype=np.float32)
            residual = np.empty(n, dtype=np.float32)
            if getattr(self, "_basis32", None) is None:  # a 1 MB transpose: 0.8 ms of a single query
                self._basis32 = np.ascontiguousarray(self.components_.T, dtype=np.float32)
            basis32 = self._basis32
            for start in range(0, n, chunk_rows):
                block = np.asarray(vectors[start:start + chunk_rows], dtype=np.float32) - self.mean_
                coords = block @ basis32
                projected[start:start + len(block)] = coords
                rest = np.einsum("ij,ij->i", block, block) - np.einsum("ij,ij->i", coords, coords)
                residual[start:start + len(block)] = np.sqrt(np.maximum(rest, 0.0))
            return projected, residual
        projected = np.empty((n, self.n_components_), dtype=np.float32)
        residual = np.empty(n, dtype=np.float32)
        if getattr(self, "_basis64", None) is None:
            # Kept in float64: the search's lower bounds must not be loosened by float32 rounding.
            self._basis64 = self.components_.astype(np.float64)
            self._mean64 = self.mean_.astype(np.float64)
        basis, mean = self._basis64, self._mean64
        for start in range(0, n, chunk_rows):
            centred = np.asarray(vectors[start:start + chunk_rows], dtype=np.float64) - mean
            coords = centred @ basis.T
            projected[start:start + len(centred)] = coords
            rest = np.einsum("ij,ij->i", centred, centred) - np.einsum("ij,ij->i", coords, coords)
            residual[start:start + len(centred)] = np.sqrt(np.maximum(rest, 0.0))
        return projected, residual
