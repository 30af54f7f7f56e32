"""Time of the exploration features on an index: suggested k, k-means, odd ones out, Why?, more like these.

    python bench/explore_time.py INDEX_DIR [--repeat 3]
    python bench/explore_time.py --synthetic 50000       # clusters and suggested k only, on 256-D stand-ins

Each step runs in this process after the imports (scikit-learn's import is not counted); the table gives
the median of ``--repeat`` runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

from common import clustered_unit_vectors, machine, table

from imgsim.analysis.clusters import ClusterModel, suggest_k
from imgsim.collection import Collection


def timed(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("index_dir", nargs="?")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--synthetic", type=int, metavar="N", help="time clustering on N synthetic 256-D projections")
    args = ap.parse_args()
    import sklearn.cluster  # noqa: F401  (imported once, outside the timings)
    import sklearn.metrics  # noqa: F401

    if args.synthetic:
        x = clustered_unit_vectors(args.synthetic, 256, seed=2)
        rows = []
        s, suggestion = timed(lambda: suggest_k(x), args.repeat)
        rows.append([f"suggested k (silhouette, k = 2..12, sample {suggestion.sample_size:,})", f"{s:.3f}",
                     f"k = {suggestion.k}"])
        for k in (8, 20):
            s, model = timed(lambda: ClusterModel(k).fit(x), args.repeat)
            rows.append([f"k-means, k = {k} ({model.method_})", f"{s:.3f}", f"largest cluster {int(model.sizes_[0])}"])
        print(f"Clusters on N = {args.synthetic:,} synthetic 256-D vectors; {machine()}")
        print(table(["step", "seconds (median)", "result"], rows))
        return

    col = Collection.open(args.index_dir)
    n = col.count
    rows = []
    s, suggestion = timed(lambda: col.suggest_k(), args.repeat)
    rows.append([f"suggested k (silhouette, k = 2..12, sample {suggestion.sample_size:,})", f"{s:.3f}",
                 f"k = {suggestion.k}"])
    for k in (8, 20):
        s, model = timed(lambda: col.clusters(k), args.repeat)
        rows.append([f"k-means, k = {k} ({model.method_})", f"{s:.3f}", f"largest cluster {int(model.sizes_[0])}"])
    s, found = timed(lambda: col.outliers(20), args.repeat)
    rows.append(["odd ones out, top 20 (stored neighbour graph)", f"{s:.4f}", col.paths[found[0].row]])
    if col.index.pooling == "flatten":
        s, e = timed(lambda: col.explain(0, 1), args.repeat)
        rows.append(["Why? one pair, flatten (49 per-cell dot products)", f"{s:.4f}",
                     f"|sum(cells) - cosine| = {abs(float(e.cells.sum()) - e.cosine):.1e}"])
    s, result = timed(lambda: col.query_examples([(0, None), (1, None), (2, None)], [(3, None)], 10), args.repeat)
    rows.append(["more like these: 3 positives, 1 negative, k = 10", f"{s:.4f}", f"first: {result.neighbors[0].path}"])
    print(f"Exploration on {args.index_dir}: N = {n:,}, {col.index.pooling} ({col.index.dims:,}-D), "
          f"weights {col.weights_label}; {machine()}")
    print(table(["step", "seconds (median)", "result"], rows))


if __name__ == "__main__":
    main()
