"""Built-in quality check: do an image's nearest neighbours share its label (its sub-folder)?"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class LabelScore:
    """Figures for the images of one label."""

    label: str
    images: int
    precision_at_k: float
    nn_accuracy: float
    baseline: float


@dataclass
class Evaluation:
    """precision@k (neighbours sharing the query's label, the query itself not counted), 1-NN accuracy,
    per-label figures, and the expected value of both under a random ranking."""

    k: int
    queries: int
    precision_at_k: float
    nn_accuracy: float
    baseline_precision_at_k: float
    baseline_nn_accuracy: float
    per_label: list[LabelScore] = field(default_factory=list)
    unlabelled: int = 0

    def to_json(self) -> dict:
        return asdict(self)


def evaluate(labels: list[str], neighbors: np.ndarray, k: int) -> Evaluation:
    """Score a neighbour table (row i: the rows nearest to i, itself excluded, nearest first).

    Images with an empty label (files at the top of the folder) are not queries but can be neighbours.
    The random baseline is exact, not sampled: a random ranking puts a same-label image at any position
    with probability (n_label - 1) / (n - 1).
    """
    labels_arr = np.asarray(labels, dtype=object)
    n = len(labels_arr)
    neighbors = np.asarray(neighbors)
    k = int(min(k, neighbors.shape[1] if neighbors.ndim == 2 else 0))
    queries = np.flatnonzero(labels_arr != "")
    if n < 2 or k == 0 or len(queries) == 0:
        return Evaluation(k, 0, 0.0, 0.0, 0.0, 0.0, [], int(n - len(queries)))
    found = neighbors[queries, :k]
    # -1 is approximate search's "no neighbour here": a miss, never the label of the last row.
    same = (found >= 0) & (labels_arr[np.where(found >= 0, found, 0)] == labels_arr[queries][:, None])
    precision = same.mean(axis=1)
    nn_hit = same[:, 0].astype(float)
    names, counts = np.unique(labels_arr[queries].astype(str), return_counts=True)
    size = dict(zip(names, counts))
    baseline = np.array([(size[str(lab)] - 1) / (n - 1) for lab in labels_arr[queries]])
    per_label = []
    for name in names:
        mask = labels_arr[queries] == name
        per_label.append(LabelScore(str(name), int(mask.sum()), float(precision[mask].mean()),
                                    float(nn_hit[mask].mean()), float(baseline[mask].mean())))
    return Evaluation(k, int(len(queries)), float(precision.mean()), float(nn_hit.mean()),
                      float(baseline.mean()), float(baseline.mean()), per_label, int(n - len(queries)))
