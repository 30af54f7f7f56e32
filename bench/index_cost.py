"""Indexing cost per 1,000 images, in both poolings: time and disk (random weights: same cost as ImageNet).

    python bench/index_cost.py [--small 96] [--large 192]

Indexes two subsets of the demo collection and reports the marginal cost (large - small), so fixed
costs (model load, the PCA basis file) are shown apart from what grows with the collection.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from common import DEMO, machine, table

from imgsim.build import build_index
from imgsim.models.resnet50 import POOLINGS, ResNet50Backbone


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=96)
    ap.add_argument("--large", type=int, default=192)
    args = ap.parse_args()
    images = sorted(DEMO.rglob("*.jpg"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in (args.small, args.large):
            for i, src in enumerate(images[:n]):
                dst = tmp / f"src{n}" / src.relative_to(DEMO)
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(src, dst)
        for pooling in ("flatten", "avg"):
            model = ResNet50Backbone("random", pooling)
            model.embed(np.zeros((model.batch_size, 224, 224, 3), np.uint8))  # trace once, outside the timings
            measured = {}
            for n in (args.small, args.large):
                ix = tmp / f"ix-{pooling}-{n}"
                t0 = time.perf_counter()
                report = build_index(tmp / f"src{n}", ix, weights="random", pooling=pooling,
                                     model_factory=lambda *a: model)
                measured[n] = (time.perf_counter() - t0, folder_size(ix), report.images_per_second)
            (t_s, _, _), (t_l, b_l, ips) = measured[args.small], measured[args.large]
            per_img_s = (t_l - t_s) / (args.large - args.small)
            gen = next((tmp / f"ix-{pooling}-{args.large}").glob("gen-*"))
            basis = sum((gen / f).stat().st_size for f in ("pca_components.npy", "pca_mean.npy"))
            per_img_b = (b_l - basis) / args.large
            full_basis = (256 + 1) * POOLINGS[pooling] * 4  # the basis stops growing at 256 components
            rows.append([pooling, f"{ips:.1f}", f"{per_img_s * 1000:.0f} s", f"{per_img_b * 1000 / 2**20:.0f} MiB",
                         f"{full_basis / 2**20:.0f} MiB"])
    print(f"Indexing cost (demo photos, ~300 px JPEG; time: marginal between {args.small} and {args.large} images, "
          "disk: everything but the PCA basis, per image); "
          f"{machine()}")
    print(table(["pooling", "extraction images/s", "time per 1,000 images", "disk per 1,000 images",
                 "plus once per index (PCA basis)"], rows))


if __name__ == "__main__":
    main()
