"""What the neighbour graph of an ANN index costs and reaches at several operating points, side by side.

    python bench/ann_graph.py --index DIR [--rows 4096] [--points 112:48,32:192]

DIR is an ANN index (``bench/scale.py --out DIR``). For each ``n_probe:candidates`` point, ``--rows`` rows
(spread over the collection) get their graph row as the build computes it (``AnnSearch.kneighbors_rows``):
seconds per 1,000 rows for the IVF search alone and for the whole row (IVF + exact re-rank), and the graph's
recall@10 on 400 other rows, each left out of its own search, against brute force. Default points: the
query operating point the index recorded with its graph candidates, and the graph's own point it recorded
(where the index has one).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from common import machine, table

from imgsim.search import tuning
from imgsim.search.ann import recall_at_k
from imgsim.store import generations as store
from imgsim.search.ann_build import AnnMethod


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index", required=True, type=Path)
    ap.add_argument("--rows", type=int, default=4096, help="graph rows timed per point")
    ap.add_argument("--points", default=None, help="n_probe:candidates,... (default: the recorded ones)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    index = store.load_index(args.index)
    info = index.meta["search"]
    search = AnnMethod().open(index)
    if args.points:
        points = [tuple(int(v) for v in p.split(":")) for p in args.points.split(",")]
    else:
        points = [(info["n_probe"], info["graph_candidates"])]
        if info.get("graph_n_probe"):
            points.append((info["graph_n_probe"], info["graph_candidates"]))
    n = search.n
    timed = np.linspace(0, n - 1, args.rows).astype(np.int64)
    check = tuning.held_out(search, index.vectors, np.setdiff1d(np.random.default_rng(5).choice(n, 400, replace=False),
                                                                 timed))
    pq = search.projection_.transform(np.asarray(index.vectors[timed], dtype=np.float32), precise=False)[0]
    search.kneighbors_rows(timed[:64], 10, candidates=points[0][1], n_probe=points[0][0])  # warm the page cache
    rows = []
    for n_probe, candidates in points:
        t0 = time.perf_counter()
        search.candidates_of(pq, candidates + 1, n_probe=n_probe)
        ivf = time.perf_counter() - t0
        t0 = time.perf_counter()
        search.kneighbors_rows(timed, 10, candidates=candidates, projected=pq, n_probe=n_probe)
        whole = time.perf_counter() - t0
        found = search.kneighbors_rows(check.rows, check.k, candidates=candidates, n_probe=n_probe)
        per_k = 1e3 / len(timed)
        rows.append({"n_probe": n_probe, "candidates": candidates, "ivf_s_per_1k": round(ivf * per_k, 3),
                     "row_s_per_1k": round(whole * per_k, 3),
                     "rerank_s_per_1k": round((whole - ivf) * per_k, 3),
                     "graph_recall_at_10": round(recall_at_k(found.indices, check.others), 4),
                     "whole_graph_s": round(whole * n / len(timed), 1)})
    result = {"index": str(args.index), "n": n, "n_lists": search.n_lists_, "rows_timed": len(timed),
              "recall_queries": len(check.rows), "points": rows, "machine": machine()}
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(result["machine"], f"n = {n:,}, {search.n_lists_:,} cells, {len(timed):,} rows timed")
        print(table(["n_probe", "candidates", "IVF s / 1k rows", "re-rank s / 1k rows", "graph row s / 1k rows",
                     "graph recall@10", "whole graph s (estimate)"],
                    [[r["n_probe"], r["candidates"], r["ivf_s_per_1k"], r["rerank_s_per_1k"], r["row_s_per_1k"],
                      r["graph_recall_at_10"], r["whole_graph_s"]] for r in rows]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
