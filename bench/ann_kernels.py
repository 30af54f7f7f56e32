"""Why the IVF index stores 128 numbers per row, 8-bit: faiss's scan at 129 vs 128 dimensions, float32 vs SQ8.

    python bench/ann_kernels.py [--n 300000]

Clustered synthetic rows, 1,600 IVF cells, 24 probed; a batch of 4,096 queries (how the neighbour graph is
built) and single queries (how the dashboard asks). Prints one table; compare rows of the same run.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import machine, table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300_000)
    ap.add_argument("--lists", type=int, default=1600)
    args = ap.parse_args()
    import faiss

    faiss.omp_set_num_threads(1)
    rows = []
    for d in (129, 128):
        rng = np.random.default_rng(0)
        centres = rng.normal(size=(2000, d)).astype(np.float32)
        x = (centres[rng.integers(0, 2000, args.n)] + 0.5 * rng.normal(size=(args.n, d))).astype(np.float32)
        queries = x[rng.choice(args.n, 4096, replace=False)] + 0.01
        for kind in ("IndexIVFFlat", "IndexIVFScalarQuantizer 8-bit"):
            quantizer = faiss.IndexFlatL2(d)
            index = (faiss.IndexIVFFlat(quantizer, d, args.lists) if kind == "IndexIVFFlat" else
                     faiss.IndexIVFScalarQuantizer(quantizer, d, args.lists, faiss.ScalarQuantizer.QT_8bit,
                                                   faiss.METRIC_L2))
            index.train(x[:80_000])
            index.add(x)
            index.nprobe = 24
            t = time.perf_counter()
            index.search(queries[:1024] if d % 16 else queries, 17)
            batch = (time.perf_counter() - t) / (1024 if d % 16 else 4096)
            single = []
            for i in range(200):
                t = time.perf_counter()
                index.search(queries[i:i + 1], 100)
                single.append(time.perf_counter() - t)
            rows.append([d, kind, f"{batch * 1e6:,.0f}", f"{np.median(single) * 1e3:.3f}",
                         f"{index.sa_code_size() if hasattr(index, 'sa_code_size') else d * 4}"])
    print(f"faiss {faiss.__version__}, N = {args.n:,}, {args.lists} cells, 24 probed, one thread; {machine()}")
    print(table(["dims", "index", "graph batch: µs per query", "single query p50 ms", "bytes per row"], rows))


if __name__ == "__main__":
    main()
