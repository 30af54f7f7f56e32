"""What the neighbour graph of an ANN index costs and reaches at several operating points, side by side.

    python bench/ann_graph.py --index DIR [--rows 4096] [--points 112:48,32:192]

DIR is an ANN index (``bench/scale.py --out DIR``). For each ``n_probe:candidates`` point, ``--rows`` rows
get their graph row as the build computes it (``AnnSearch.kneighbors_rows``), in two orders: rows spread over
the collection (``row``: consecutive queries in unrelated cells) and the first rows of the build's order
(``cell``: ``ann_build.graph_order``); seconds per 1,000 rows for the IVF search alone and for the whole row
(IVF + exact re-rank), and the graph's recall@10 on 400 random rows, each left out of its own search,
against brute force. Default point: the ``n_probe`` the index recorded, with its graph's candidates.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from common import machine, table

from imgsim.search import ann_build, tuning
from imgsim.search.ann import recall_at_k
from imgsim.store import generations as store


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", required=True, type=Path)
    ap.add_argument("--rows", type=int, default=4096, help="graph rows timed per point")
    ap.add_argument("--points", default=None, help="n_probe:candidates,... (default: the recorded point)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    index = store.load_index(args.index)
    info = index.meta["search"]
    search = ann_build.AnnMethod().open(index)
    if args.points:
        points = [tuple(int(v) for v in p.split(":")) for p in args.points.split(",")]
    else:
        points = [(info["n_probe"], info["graph_candidates"])]
    n = search.n
    vectors = index.vectors
    check = tuning.held_out(search, vectors, np.random.default_rng(5).choice(n, 400, replace=False))
    # The build's order (graph_order over every row, then blocks of it) against rows spread over the collection.
    projected = search.projection_.transform(vectors, chunk_rows=4096, precise=False)[0]
    orders = {"row": np.linspace(0, n - 1, args.rows).astype(np.int64),
              "cell": ann_build.graph_order(search, projected)[:args.rows]}
    search.kneighbors_rows(orders["row"][:64], 10, candidates=points[0][1], n_probe=points[0][0])  # warm up
    rows = []
    for n_probe, candidates in points:
        for name, timed in orders.items():
            t0 = time.perf_counter()
            search.candidates_of(projected[timed], candidates + 1, n_probe=n_probe)
            ivf = time.perf_counter() - t0
            t0 = time.perf_counter()
            search.kneighbors_rows(timed, 10, candidates=candidates, projected=projected[timed], n_probe=n_probe)
            whole = time.perf_counter() - t0
            per_k = 1e3 / len(timed)
            rows.append({"n_probe": n_probe, "candidates": candidates, "order": name,
                         "ivf_s_per_1k": round(ivf * per_k, 3), "row_s_per_1k": round(whole * per_k, 3),
                         "rerank_s_per_1k": round((whole - ivf) * per_k, 3),
                         "whole_graph_s": round(whole * n / len(timed), 1)})
        found = search.kneighbors_rows(check.rows, check.k, candidates=candidates, n_probe=n_probe)
        for r in rows[-len(orders):]:
            r["graph_recall_at_10"] = round(recall_at_k(found.indices, check.others), 4)
    result = {"index": str(args.index), "n": n, "n_lists": search.n_lists_, "rows_timed": args.rows,
              "recall_queries": len(check.rows), "points": rows, "machine": machine()}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(result["machine"], f"n = {n:,}, {search.n_lists_:,} cells, {args.rows:,} rows timed")
        print(table(["n_probe", "candidates", "order", "IVF s / 1k rows", "re-rank s / 1k rows", "graph row s / 1k rows",
                     "graph recall@10", "whole graph s (estimate)"],
                    [[r["n_probe"], r["candidates"], r["order"], r["ivf_s_per_1k"], r["rerank_s_per_1k"], r["row_s_per_1k"],
                      r["graph_recall_at_10"], r["whole_graph_s"]] for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
