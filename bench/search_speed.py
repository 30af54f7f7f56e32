"""Query latency: imgsim's pruned exact search vs scikit-learn brute force, with an identity check.

    python bench/search_speed.py [--queries 20]

Rows: N = 5,000 in the reference ``flatten`` mode (100,352-D) and N = 50,000 in ``avg`` mode (2,048-D),
on synthetic clustered unit vectors (see bench/common.py), plus the real demo collection if it has been
indexed (``--demo-index``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.neighbors import NearestNeighbors

from common import clustered_unit_vectors, machine, table

from imgsim.search.projection import PCAProjection
from imgsim.search.exact import ExactSearch


def bench(name: str, x: np.ndarray, queries: np.ndarray, k: int) -> list[object]:
    t0 = time.perf_counter()
    projection = PCAProjection(n_components=256).fit(x)
    search = ExactSearch().fit(x, projection)
    t_fit = time.perf_counter() - t0
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean").fit(x)
    search.kneighbors(queries[:1], k)
    nn.kneighbors(queries[:1])  # warm both
    t0 = time.perf_counter()
    ref = [nn.kneighbors(q[None]) for q in queries]  # one query at a time, as in the dashboard
    t_ref = (time.perf_counter() - t0) / len(queries)
    ref_d = np.concatenate([d for d, _ in ref])
    ref_i = np.concatenate([i for _, i in ref])
    fractions, ours_i, ours_d = [], [], []
    t0 = time.perf_counter()
    for q in queries:
        found = search.kneighbors(q[None], k)
        ours_i.append(found.indices[0])
        ours_d.append(found.distances[0])
        fractions.append(search.last_exact_fraction_)
    t_ours = (time.perf_counter() - t0) / len(queries)
    same = np.array_equal(np.array(ours_i), ref_i)
    max_dd = float(np.abs(np.array(ours_d) - ref_d).max())
    return [name, f"{t_ref * 1000:.1f}", f"{t_ours * 1000:.1f}", f"{t_ref / t_ours:.0f}x",
            f"{np.mean(fractions):.1%}", "yes" if same else "NO", f"{max_dd:.1e}", f"{t_fit:.1f}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=20)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--demo-index", help="an index of the demo collection, to add a row with real features")
    args = ap.parse_args()
    rng = np.random.default_rng(42)
    rows = []
    for name, n, d in (("flatten, N=5,000, synthetic", 5000, 100352), ("avg, N=50,000, synthetic", 50000, 2048)):
        x = clustered_unit_vectors(n, d, seed=n)
        queries = x[rng.choice(n, args.queries, replace=False)]
        rows.append(bench(name, x, queries, args.k))
        del x
    if args.demo_index:
        from imgsim.store.generations import load_index

        ix = load_index(args.demo_index)
        x = np.asarray(ix.vectors)
        rows.append(bench(f"{ix.pooling}, N={ix.count}, demo photos ({ix.weights['label'].split(' -')[0]})",
                          x, x[rng.choice(len(x), args.queries, replace=False)], args.k))
    print(f"Query latency per query (k={args.k}, {args.queries} queries, one at a time); {machine()}")
    print(table(["collection", "sklearn brute ms", "imgsim ms", "speed-up", "vectors scanned exactly",
                 "same neighbours", "max |dist diff|", "fit s"], rows))


if __name__ == "__main__":
    main()
