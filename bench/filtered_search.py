"""Filters before similarity, keywords and fusion, measured: the figures of docs/metadata.md.

    python bench/filtered_search.py filtered --index DIR [--data clustered|features] [--queries 100] [--exact-queries 20]
    python bench/filtered_search.py bm25 [--captions 1000000]
    python bench/filtered_search.py ranking [--models resnet50,efficientnet-lite0] [--vectors LABEL=FILE.npy ...]

``filtered``: an ANN index built by ``bench/scale.py`` (synthetic vectors: ``python bench/scale.py --n 200000
--dims 2048 --out DIR [--data features]``; pass the same ``--data`` here) gets a synthetic metadata column, ``bucket``, uniform in 0..999 over random rows, held
in memory as the collection's metadata table (the index on disk is not changed); ``bucket < 500``, ``< 100``,
``< 10`` and ``< 1`` pass 50 %, 10 %, 1 % and 0.1 % of the images. Out-of-sample queries (new vectors from the
index's distribution), k = 10, one at a time: ANN under faiss' ID selector (what ``query --where`` runs on that
index, through :class:`~imgsim.collection.Collection`) against exact search under the same mask (the ``exact``
method, PCA bounds, fitted here on the same vectors), and recall@10 of both against brute force over the
matching rows only.

``bm25``: BM25 fit and query p50 over N synthetic 8-word captions (bench/metadata_cost.py's generator).

``ranking``: the demo collection (data/demo) with data/demo/captions.csv; each of the 361 captioned photos asks
for 10 others, relevance = same top folder (the photo itself excluded): by its vector (exact nearest), by its
caption as a BM25 query over every photo's text (names, folders, captions, tags), and the two fused by
reciprocal rank (k = 60, equal weights). mAP@10 for each ``--models`` backbone that this checkout registers
(ResNet50 with seeded random weights, flatten; EfficientNet-Lite0 with its ImageNet weights, avg), and for each
``--vectors LABEL=FILE.npy``: the demo's vectors computed elsewhere (rows in ``discover`` order, see
:func:`demo_vectors`), e.g. by a checkout where a backbone is registered and this one's is not.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from common import DEMO, machine, table

from imgsim import decode
from imgsim.collection import Collection
from imgsim.discover import discover
from imgsim.metadata.fields import Kind
from imgsim.metadata.filters import parse_where
from imgsim.metadata.fusion import rrf
from imgsim.metadata.keywords import KeywordIndex
from imgsim.metadata.read import read_file_metadata
from imgsim.metadata.sidecar import read_sidecar
from imgsim.metadata.table import MetadataTable
from imgsim.search.ann import exact_kneighbors, recall_at_k
from imgsim.search.exact import PROJECTION_COMPONENTS, ExactSearch
from imgsim.search.projection import PCAProjection

SELECTIVITIES = {"50 %": 500, "10 %": 100, "1 %": 10, "0.1 %": 1}
K = 10


def _ms(seconds: list[float]) -> str:
    return f"{statistics.median(seconds) * 1e3:.2f} / {np.percentile(seconds, 99) * 1e3:.2f}"


def _timed(fn, queries: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """``fn(query)`` for each query, one at a time: the rows found (k each) and the seconds each took."""
    fn(queries[0])  # warm: the filter's mask, faiss' and BLAS's first-call costs
    rows, lat = [], []
    for q in queries:
        started = time.perf_counter()
        found = fn(q)
        lat.append(time.perf_counter() - started)
        rows.append(found)
    return np.array(rows), lat


def filtered(args: argparse.Namespace) -> None:
    """Filtered query latency and recall@10 at four selectivities: ANN under the selector vs exact under the mask."""
    from scale import DATA, QUERY_SEED

    col = Collection.open(args.index)
    vectors, n = col.index.vectors, col.count
    if col.search_method != "ann":
        raise SystemExit(f"{args.index} answers with {col.search_method} search: build an ANN index with bench/scale.py")
    bucket = np.random.default_rng(7).integers(0, 1000, n)
    col.__dict__["metadata"] = MetadataTable({"bucket": pa.array(bucket)}, {"bucket": Kind.INT})
    queries = np.concatenate([x for _, x in DATA[args.data](args.queries, col.index.dims, sample_seed=QUERY_SEED)])
    started = time.perf_counter()
    exact = ExactSearch().fit(vectors, PCAProjection(n_components=PROJECTION_COMPONENTS).fit(vectors))
    print(f"exact search fitted on {n:,} vectors in {time.perf_counter() - started:.0f} s", file=sys.stderr)

    rows_out = []
    ann, lat = _timed(lambda q: [h.row for h in col.neighbors_of_vector(q, K).neighbors], queries)
    truth = exact_kneighbors(vectors, queries, K).indices
    rows_out.append(["none (100 %)", f"{n:,}", "", "", "", _ms(lat), f"{recall_at_k(ann, truth):.3f}"])
    for label, below in SELECTIVITIES.items():
        where = parse_where([f"bucket < {below}"])
        started = time.perf_counter()
        mask = where.mask(col.metadata)
        mask_ms = (time.perf_counter() - started) * 1e3
        passing = np.flatnonzero(mask)
        truth = passing[exact_kneighbors(vectors[passing], queries, K).indices]
        ann, ann_lat = _timed(lambda q: [h.row for h in col.neighbors_of_vector(q, K, where).neighbors], queries)
        few = queries[:args.exact_queries]
        found, exact_lat = _timed(lambda q: exact.kneighbors(q[None], K, allowed=mask).indices[0], few)
        rows_out.append([f"{where.texts[0]} ({label})", f"{len(passing):,}", f"{mask_ms:.1f}", _ms(exact_lat),
                         f"{recall_at_k(found, truth[:len(few)]):.3f}", _ms(ann_lat), f"{recall_at_k(ann, truth):.3f}"])
        print(f"  {label}: done", file=sys.stderr)
    print(f"\nFiltered search, {n:,} x {col.index.dims} synthetic {args.data} vectors (bench/scale.py), k = {K}, one query at a "
          f"time: {args.queries} ANN and {args.exact_queries} exact queries (out of sample); {machine()}")
    print(f"ANN: {col.search_summary(short=True)}\n")
    print(table(["filter", "images passing", "mask ms", "exact under mask p50 / p99 ms", "exact recall@10",
                 "ANN under selector p50 / p99 ms", "ANN recall@10"], rows_out))


def bm25(args: argparse.Namespace) -> None:
    """BM25 fit and query over N synthetic captions."""
    from metadata_cost import synthetic_bm25

    print(f"\nBM25 over synthetic captions; {machine()}\n")
    print(table(["what", "time", "also"], synthetic_bm25(args.captions)))


def _demo_table() -> tuple[list[str], MetadataTable]:
    """The demo's paths and metadata (file headers and captions.csv), as an index of it would hold them."""
    found = discover(DEMO)
    rels = [f.rel for f in found.files]
    metas = [read_file_metadata(f.path, rel=f.rel).values for f in found.files]
    demo, _ = MetadataTable.from_rows(metas).with_sidecar(read_sidecar(DEMO / "captions.csv"), rels)
    return rels, demo


#: Backbone -> (label, weights, pooling) of the ranking figure.
MODELS = {"resnet50": ("ResNet50, seeded random weights (flatten)", "random", "flatten"),
          "efficientnet-lite0": ("EfficientNet-Lite0, ImageNet weights (avg)", "imagenet", "avg")}


def demo_vectors(name: str, rels: list[str]) -> np.ndarray:
    """The demo photos' vectors from backbone ``name`` (its :data:`MODELS` settings), rows in ``rels`` order."""
    from imgsim.models.base import BackboneSpec, make_backbone

    _, weights, pooling = MODELS[name]
    model = make_backbone(BackboneSpec.parse(name), weights, pooling, 16)
    pixels = np.stack([decode.model_input(decode.read_bytes(DEMO / r)) for r in rels])
    return np.concatenate([model.embed(pixels[i:i + 16]) for i in range(0, len(pixels), 16)])


def _feature_sets(args: argparse.Namespace, rels: list[str]):
    """(label, vectors) for every backbone asked for that this checkout has, then every --vectors file."""
    from imgsim.errors import ImgsimError

    for name in filter(None, args.models.split(",")):
        try:
            yield MODELS[name][0], demo_vectors(name, rels)
        except ImgsimError as exc:  # e.g. a backbone not registered in this checkout
            print(f"  {name}: skipped ({exc})", file=sys.stderr)
    for item in args.vectors:
        label, _, path = item.rpartition("=")
        vectors = np.load(path)
        if len(vectors) != len(rels):
            raise SystemExit(f"{path} has {len(vectors)} rows for the {len(rels)} demo photos")
        yield label, vectors


def average_precision(ranked: list[int], relevant: set[int], k: int = K) -> float:
    """AP@k: the precision at each relevant hit in the first k, over min(k, number of relevant)."""
    hits, total = 0, 0.0
    for i, row in enumerate(ranked[:k], start=1):
        if row in relevant:
            hits += 1
            total += hits / i
    return total / min(k, len(relevant)) if relevant else 0.0


def ranking(args: argparse.Namespace) -> None:
    """mAP@10 on the demo with its captions: by vector, by caption (BM25), and fused."""
    rels, demo = _demo_table()
    folders = [r.split("/", 1)[0] for r in rels]
    captions = demo.column("caption").to_pylist()
    keywords = KeywordIndex.from_table(demo)
    asking = [i for i, c in enumerate(captions) if c]
    depth = 50
    rows_out = []
    for label, vectors in _feature_sets(args, rels):
        found = exact_kneighbors(vectors, vectors[asking], depth + 1).indices
        scores = {"vector": [], "keywords": [], "fused": []}
        for query, neighbours in zip(asking, found):
            relevant = {j for j, f in enumerate(folders) if f == folders[query] and j != query}
            by_vector = [int(j) for j in neighbours if j != query][:depth]
            rows, bm = keywords.search(captions[query], depth + 1)
            by_words = [(int(r), float(s)) for r, s in zip(rows, bm) if r != query][:depth]
            fused = rrf({"vector": (by_vector, [0.0] * len(by_vector)),
                         "keywords": ([r for r, _ in by_words], [s for _, s in by_words])}, limit=K)
            scores["vector"].append(average_precision(by_vector, relevant))
            scores["keywords"].append(average_precision([r for r, _ in by_words], relevant))
            scores["fused"].append(average_precision([h.row for h in fused], relevant))
        rows_out.append([label, *(f"{np.mean(v):.3f}" for v in scores.values())])
        print(f"  {label}: done", file=sys.stderr)
    print(f"\nmAP@{K} on the demo ({len(rels)} photos, {len(asking)} with a caption ask; relevance: same folder); "
          f"{machine()}\n")
    print(table(["features", "vector only", "keywords only (caption as query)", "fused (RRF, k = 60)"], rows_out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="part", required=True)
    p = sub.add_parser("filtered", help="filtered query latency and recall on an ANN index of bench/scale.py")
    p.add_argument("--index", required=True, type=Path)
    p.add_argument("--data", choices=("clustered", "features"), default="clustered",
                   help="the --data the index was built with (the queries come from the same distribution)")
    p.add_argument("--queries", type=int, default=100, help="ANN queries per selectivity")
    p.add_argument("--exact-queries", type=int, default=20, help="exact queries per selectivity")
    p = sub.add_parser("bm25", help="BM25 over synthetic captions")
    p.add_argument("--captions", type=int, default=1_000_000)
    p = sub.add_parser("ranking", help="mAP@10 of vector, keyword and fused rankings on the demo")
    p.add_argument("--models", default="resnet50,efficientnet-lite0")
    p.add_argument("--vectors", action="append", default=[], metavar="LABEL=FILE.npy",
                   help="the demo's vectors computed elsewhere (rows in discover order)")
    args = ap.parse_args()
    {"filtered": filtered, "bm25": bm25, "ranking": ranking}[args.part](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
