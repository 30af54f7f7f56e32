"""The JSON shapes of ``python -m imgsim ... --json``, built from a Collection's answers.

One implementation for every transport: the CLI prints these, and the HTTP API and the MCP server return them,
so all three answer the same inputs with the same JSON.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from imgsim.analysis.duplicates import DuplicateGroup, threshold_summary
from imgsim.analysis.evaluate import Evaluation
from imgsim.analysis.explain import Explanation
from imgsim.analysis.outliers import Outlier
from imgsim.analysis.recommend import NEGATIVE_WEIGHT
from imgsim.collection import Collection, Neighbor, QueryResult
from imgsim.metadata.filters import Filter
from imgsim.metadata.fusion import RRF_K
from imgsim.models.base import TextEmbedding
from imgsim.models.weights import weights_spec


def weights_fields(col: Collection) -> dict:
    """``weights`` (the spec that built the index) and ``random_weights``, as every ``--json`` output carries."""
    spec = weights_spec(col.index.weights)
    if spec == "imagenet":  # Weights' word for published weights: say it as the backbone does (CLIP: pretrained)
        spec = col.backbone.capabilities.pretrained_weights
    return {"weights": spec, "random_weights": col.is_random}


def neighbors_json(col: Collection, neighbors: Sequence[Neighbor]) -> list[dict]:
    """Results as every query lists them: path, distance, similarity, where a text query's rank came from
    (``scores``) and, when the index has metadata, the image's known values (``metadata``)."""
    if col.metadata is None:
        return [n.to_json() for n in neighbors]
    values = col.metadata_of([n.row for n in neighbors])
    return [dict(n.to_json(), metadata=v) for n, v in zip(neighbors, values)]


def filter_fields(where: Filter | None = None, max_distance: float | None = None,
                  deduplicate: float | None = None) -> dict:
    """The filters a query ran under, as its JSON repeats them: ``where`` (each clause written back), ``near``
    (``LAT,LON,KM``), ``max_distance`` and ``deduplicate``; none when none were given."""
    out: dict = {}
    if where is not None and where.clauses:
        out["where"] = where.texts
    if where is not None and where.near is not None:
        out["near"] = where.near.text
    if deduplicate is not None:
        out["deduplicate"] = deduplicate
    if max_distance is not None:
        out["max_distance"] = max_distance
    return out


def query_json(col: Collection, query: object, result: QueryResult) -> dict:
    """``query --json`` for one image: ``{"query", "neighbors", "k", "weights", "random_weights"}``."""
    return {"query": query, "neighbors": neighbors_json(col, result.neighbors), "k": result.k, **weights_fields(col)}


def examples_json(col: Collection, positives: Sequence[str], negatives: Sequence[str], result: QueryResult) -> dict:
    """``query --json`` for several images and ``--not`` images (more like these)."""
    return {"query": list(positives), "not": list(negatives), "weight": NEGATIVE_WEIGHT,
            "neighbors": neighbors_json(col, result.neighbors), "k": result.k, **weights_fields(col)}


def text_json(col: Collection, embedded: TextEmbedding | None, result: QueryResult, text: str | None = None,
              fusion: dict[str, float] | None = None) -> dict:
    """``query --text ... --json``: the text as the model read it (its tokens), and the results; ``ranking``
    says how they were ranked when keywords took part: ``keywords`` (BM25 alone, no model: ``embedded`` None)
    or ``fused`` (reciprocal rank fusion with the ``fusion`` weights)."""
    data = {"query": {"text": embedded.text if embedded is not None else text},
            "neighbors": neighbors_json(col, result.neighbors), "k": result.k}
    if embedded is None:
        data["ranking"] = "keywords"
    else:
        data.update({"tokens": embedded.tokens, "truncated": embedded.truncated,
                     **({"note": embedded.note} if embedded.truncated else {})})
        if any(n.scores for n in result.neighbors):
            data.update(ranking="fused", fusion={**(fusion or {}), "k": RRF_K})
    return {**data, **weights_fields(col)}


def nearest_distribution(col: Collection) -> dict:
    """Each image's distance to its nearest other image, summarised to help choose a threshold."""
    d = col.nearest_distances()
    if not len(d):
        return {"percentiles": {}, "images_within": []}
    points = (1, 5, 10, 25, 50, 75, 90)
    return {"percentiles": {str(p): round(float(v), 4) for p, v in zip(points, np.percentile(d, points))},
            "images_within": [[t, n] for t, n in threshold_summary(d)]}


def dedup_json(col: Collection, threshold: float, groups: list[DuplicateGroup]) -> dict:
    """``dedup --json``: groups of relative paths, each image's nearest distance, and the distribution."""
    return {"threshold": threshold, "groups": [[col.paths[r] for r in g.rows] for g in groups],
            "nearest": [[round(d, 6) for d in g.nearest] for g in groups],
            "nearest_distance_distribution": nearest_distribution(col), **weights_fields(col)}


def cluster_dict(col: Collection, model, central: int = 5) -> list[dict]:
    """Clusters as JSON-ready dicts: id, size, central paths, and every path (nearest to the centre first)."""
    return [{"id": c, "size": int(model.sizes_[c]),
             "central": [col.paths[r] for r in model.central(c, central)],
             "paths": [col.paths[r] for r in model.members(c)]} for c in range(model.k_)]


def clusters_json(col: Collection, model, requested_k: int | None, central: int, suggested=None) -> dict:
    """``cluster --json`` (without ``--out``): k, the clusters, the method, and the suggestion when k was not given."""
    data = {"k": model.k_, "clusters": cluster_dict(col, model, central), "method": model.method_,
            "requested_k": requested_k, **weights_fields(col)}
    if suggested is not None:
        data["suggested"] = {"k": suggested.k, "silhouette": {str(k): round(v, 6) for k, v in suggested.scores.items()},
                             "sample_size": suggested.sample_size}
    return data


def explain_json(col: Collection, a: str, b: str, explanation: Explanation) -> dict:
    """``explain --json``: the cosine, the 7x7 cells and how they were computed."""
    return {"a": a, "b": b, **explanation.to_json(), "pooling": col.index.pooling, **weights_fields(col)}


def evaluate_json(col: Collection, ev: Evaluation) -> dict:
    """``evaluate --json``: precision@k, 1-NN accuracy and the random baseline, overall and per label."""
    return {**ev.to_json(), **weights_fields(col)}


def outliers_json(col: Collection, found: Sequence[Outlier], k: int) -> dict:
    """``outliers --json``: the images farthest from their ``k`` nearest others, odd ones first."""
    return {"n": len(found), "score": f"mean distance to the {k} nearest other images",
            "outliers": [{"rank": o.rank, "path": col.paths[o.row], "score": round(o.score, 6),
                          "nearest": round(o.nearest, 6)} for o in found], **weights_fields(col)}


def metadata_info(col: Collection) -> dict:
    """``info --json`` ``metadata``: every field with its type and how many images have a value, whether a text
    query can search the images' words, and the sidecar file that gave its own columns (none for an index
    built before imgsim read metadata)."""
    recorded = col.index.meta.get("metadata") or {}
    return {"fields": [f.to_json() for f in col.metadata_fields()], "keywords": col.has_text_metadata,
            "sidecar": recorded.get("sidecar")}


def info_dict(col: Collection) -> dict:
    """``info --json`` but its ``metadata`` (:func:`metadata_info`): what an index holds (the CLI's view: it names
    the server's folders)."""
    meta = col.index.meta
    return {
        "indexed": col.count,
        "skipped": [{"path": s.path, "reason": s.reason.value, "detail": s.detail} for s in col.index.skipped],
        **weights_fields(col),
        "weights_label": col.weights_label,
        "pooling": col.index.pooling,
        "dims": col.index.dims,
        "version": meta["version"],
        "backbone": meta["backbone"],
        "preset": meta.get("preset"),
        "root": meta["root"],
        "created": meta["created"],
        "updated": meta["updated"],
        "ignored": meta.get("ignored", 0),
        "generation": col.index.generation,
        "projection": meta.get("projection"),
        "map": meta.get("map"),
        "search": col.search_info(),
    }
