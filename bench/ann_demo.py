"""Approximate against exact search on one real collection (the demo), both indexes of the same folder.

    python -m imgsim index data/demo --index EXACT_DIR --backbone efficientnet-lite0
    python -m imgsim index data/demo --index ANN_DIR --backbone efficientnet-lite0 --search ann
    python bench/ann_demo.py --exact EXACT_DIR --ann ANN_DIR [-k 10]

Every image is a query, one at a time through ``Collection`` (what the dashboard calls): as an indexed image
(itself first) and left out of its own search (an image not in the index); recall@k of the approximate
answers against the exact ones, and the p50 of both, in the same run; beside them what the ANN build
recorded (its operating point and recall) and what ``index`` would choose for this many images by itself.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from common import machine, table

from imgsim.collection import Collection
from imgsim.search import choose_method
from imgsim.search.ann import recall_at_k


def timed_rows(col: Collection, k: int) -> tuple[np.ndarray, list[float]]:
    """Each image's k nearest (itself first) through the collection, and the seconds each query took."""
    col.neighbors_of_row(0, k)  # opens the search structures, as the first query would
    found, times = [], []
    for row in range(col.count):
        t0 = time.perf_counter()
        res = col.neighbors_of_row(row, k)
        times.append(time.perf_counter() - t0)
        found.append([n.row for n in res.neighbors])
    return np.array(found), times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--exact", required=True, type=Path)
    ap.add_argument("--ann", required=True, type=Path)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    exact, ann = Collection.open(args.exact), Collection.open(args.ann)
    if exact.paths != ann.paths or not np.array_equal(np.asarray(exact.index.vectors), np.asarray(ann.index.vectors)):
        raise SystemExit("the two indexes must hold the same images and vectors (index the same folder twice)")
    if (exact.search_method, ann.search_method) != ("exact", "ann"):
        raise SystemExit(f"--exact is searched {exact.search_method!r} and --ann {ann.search_method!r}")
    k = args.k
    truth, exact_times = timed_rows(exact, k)
    found, ann_times = timed_rows(ann, k)
    rows = np.arange(ann.count)
    left_out = ann.search.kneighbors_rows(rows, k).indices
    truth_left_out = exact.search.kneighbors_rows(rows, k).indices
    built = ann.search_info()
    ms = lambda ts: round(float(np.percentile(ts, 50)) * 1e3, 3)
    result = {
        "images": ann.count, "dims": ann.index.dims, "backbone": ann.index.meta.get("backbone"), "k": k,
        "auto_choice": choose_method(None, None, ann.count)[0],
        "recall_at_k_indexed": round(recall_at_k(found, truth), 4),
        "recall_at_k_left_out": round(recall_at_k(left_out, truth_left_out), 4),
        "ann_query_ms_p50": ms(ann_times), "exact_query_ms_p50": ms(exact_times),
        "recorded": {key: built.get(key) for key in ("n_lists", "n_probe", "candidates", "recall_at_10",
                                                     "recall_at_10_out_of_sample", "queries", "graph_candidates",
                                                     "graph_recall_at_10", "query_ms_p50", "met", "reason")},
        "machine": machine(),
    }
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(result["machine"], f"{ann.count} images, {ann.index.dims}-D, k = {k}; "
                                 f"index alone would choose {result['auto_choice']!r}")
        print(table(["search", f"recall@{k} indexed images", f"recall@{k} left out", "p50 ms, one at a time"],
                    [["exact", 1.0, 1.0, result["exact_query_ms_p50"]],
                     ["ann", result["recall_at_k_indexed"], result["recall_at_k_left_out"],
                      result["ann_query_ms_p50"]]]))
        print("recorded at build:", json.dumps(result["recorded"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
