"""CLIP cost: image-embedding throughput next to ResNet50's on the same images, text-query latency, disk.

Both models use seeded random weights (same shapes and cost as the real ones: CLIP ViT-B/32 has the
151,277,363 parameters of keras-hub's clip_vit_base_patch32). The text query is timed on a CLIP index of
the demo collection (built here into a temporary folder unless --demo-index names one).

    python bench/clip_speed.py [--images 64] [--batch-size 16] [--demo-index DIR] [--queries 20]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from common import DEMO, machine, table

from imgsim import decode
from imgsim.build import build_index
from imgsim.models.clip import ClipBackbone
from imgsim.collection import Collection
from imgsim.models.resnet50 import ResNet50Backbone

QUERIES = ["a tiger", "a red car at night", "a bird on a branch", "a bowl of fruit", "coins on a table",
           "a black and white photo of a house", "flowers in a garden", "a fish in the sea", "the moon",
           "a person on a street", "a plate of food with green vegetables", "an old gravestone in the grass"]


def throughput(embed, images: np.ndarray, batch: int) -> float:
    embed(images[:batch])  # warm-up: tracing and first allocations are not steady-state cost
    t0 = time.perf_counter()
    embed(images)
    return len(images) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--demo-index", help="an existing CLIP (random weights) index of data/demo")
    ap.add_argument("--queries", type=int, default=20)
    args = ap.parse_args()
    paths = sorted(DEMO.rglob("*.jpg"))[: args.images]
    images = np.stack([decode.model_input(p.read_bytes()) for p in paths])

    resnet = ResNet50Backbone("random", "flatten", batch_size=args.batch_size)
    t0 = time.perf_counter()
    clip = ClipBackbone(None, "random", batch_size=args.batch_size)
    clip_build = time.perf_counter() - t0
    rows = []
    speeds = {}
    for name, model in (("ResNet50 (flatten)", resnet), ("CLIP ViT-B/32", clip)):
        speed = throughput(model.embed, images, args.batch_size)
        speeds[name] = speed
        rows.append([name, f"{model.dims:,}", f"{speed:.1f}", f"{1000 / speed / 60:.1f} min"])
    print(f"{machine()}; {len(images)} demo images, batch {args.batch_size}, random weights; CLIP built in "
          f"{clip_build:.1f} s\n")
    print(table(["model", "values/image", "images/s", "per 1,000 images"], rows))
    print(f"\nCLIP / ResNet50 throughput: {speeds['CLIP ViT-B/32'] / speeds['ResNet50 (flatten)']:.2f}x\n")

    with tempfile.TemporaryDirectory() as tmp:
        index_dir = Path(args.demo_index) if args.demo_index else Path(tmp) / "demo-clip.imgsim"
        if not args.demo_index:
            t0 = time.perf_counter()
            build_index(DEMO, index_dir, weights="random", backbone="clip", batch_size=args.batch_size,
                        model_factory=lambda w, p, b: clip)
            print(f"Indexed the demo collection with CLIP in {time.perf_counter() - t0:.1f} s")
        col = Collection.open(index_dir)
        assert col.supports_text, f"{index_dir} is not a CLIP index"
        gen = col.index.directory / col.index.generation
        total = sum(p.stat().st_size for p in gen.iterdir())
        vectors = (gen / "vectors.npy").stat().st_size
        col.query_text("warm up", 5, model=lambda: clip)
        col.neighbors_of_row(0, 5)
        tok, enc, search = [], [], []
        for i in range(args.queries):
            text = QUERIES[i % len(QUERIES)] + (f" number {i}" if i >= len(QUERIES) else "")
            t0 = time.perf_counter()
            clip.preprocessor({"images": None, "prompts": [text]})
            t1 = time.perf_counter()
            embedded = clip.embed_text(text)  # tokenises again, then encodes
            t2 = time.perf_counter()
            col.neighbors_of_vector(embedded.vector, 10)
            t3 = time.perf_counter()
            tok.append(t1 - t0)
            enc.append(t2 - t1)
            search.append(t3 - t2)
        med = lambda xs: statistics.median(xs) * 1000
        print(f"\nText query on the demo collection ({col.count} images, k = 10, median of {args.queries}):\n")
        print(table(["tokenise", "tokenise + encode", "search", "total"],
                    [[f"{med(tok):.1f} ms", f"{med(enc):.1f} ms", f"{med(search):.2f} ms",
                      f"{med(enc) + med(search):.1f} ms"]]))
        print(f"\nDisk: {vectors / col.count * 1000 / 2**20:.2f} MiB of vectors and {total / col.count * 1000 / 2**20:.1f} "
              f"MiB in all (previews, map, neighbour graph) per 1,000 images ({col.count} demo images, "
              f"{total / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
