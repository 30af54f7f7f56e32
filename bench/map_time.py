"""Time to build the derived data of a 5,000-image index: PCA projection, neighbour graph, 2-D map.

    python bench/map_time.py [--n 5000] [--pooling flatten|avg]

Synthetic clustered vectors (bench/common.py) stand in for features: the cost depends on the sizes only.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from common import clustered_unit_vectors, machine, table

from imgsim.store import generations as store
from imgsim.search.exact import derive_arrays
from imgsim.models.resnet50 import POOLINGS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--pooling", choices=sorted(POOLINGS), default="flatten")
    args = ap.parse_args()
    dims = POOLINGS[args.pooling]
    stamps: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        writer = store.GenerationWriter(tmp, args.n, dims)
        writer.vectors[:] = clustered_unit_vectors(args.n, dims, seed=1)

        def progress(stage, done, total):
            stamps.setdefault(stage, time.perf_counter())

        t0 = time.perf_counter()
        info = derive_arrays(writer, progress)
        end = time.perf_counter()
        writer.abort()
    order = ["compress", "neighbors", "map"]
    bounds = [stamps[s] for s in order] + [end]
    labels = {"compress": f"PCA basis ({info['projection']['n_components']} components, fitted on a 2,048 sample) "
                          "+ projection of all vectors",
              "neighbors": f"exact {info['graph_k']}-NN graph of every image (for duplicates and the check)",
              "map": f"t-SNE 2-D map from {info['map']['pca_components']} PCA components, "
                     f"perplexity {info['map']['perplexity']:g}"}
    rows = [[labels[s], f"{bounds[i + 1] - bounds[i]:.1f}"] for i, s in enumerate(order)]
    rows.append(["total", f"{end - t0:.1f}"])
    print(f"Derived data for N={args.n:,} {args.pooling} vectors ({dims:,}-D); {machine()}")
    print(table(["step", "seconds"], rows))


if __name__ == "__main__":
    main()
