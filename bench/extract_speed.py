"""Extraction speed: the reference per-image ``model.predict`` loop vs the batched, pipelined extractor.

Same model (ResNet50, seeded random weights: same shapes and cost as ImageNet), same images, one run.

    python bench/extract_speed.py [--images 64] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from common import DEMO, machine, table

from imgsim import decode
from imgsim.extract import FeatureExtractor, extract_pipelined


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args()
    paths = sorted(DEMO.rglob("*.jpg"))[: args.images]
    assert len(paths) == args.images, f"need {args.images} demo images, found {len(paths)}"

    extractor = FeatureExtractor("random", "flatten", batch_size=args.batch_size)
    import keras
    from keras.applications.resnet50 import preprocess_input

    model = extractor.model
    model.predict(np.zeros((1, 224, 224, 3), np.float32), verbose=0)  # warm-up, as a notebook would have
    extractor.embed(np.zeros((args.batch_size, 224, 224, 3), np.uint8))

    t0 = time.perf_counter()
    reference = []
    for p in paths:  # the notebook's loop, verbatim
        x = keras.utils.img_to_array(keras.utils.load_img(p, target_size=(224, 224)))
        feat = model.predict(preprocess_input(np.expand_dims(x, 0)), verbose=0).flatten()
        reference.append(feat / np.linalg.norm(feat))
    t_ref = time.perf_counter() - t0

    t0 = time.perf_counter()
    ours = dict(extract_pipelined(extractor.embed, paths, lambda p: decode.model_input(decode.read_bytes(p)),
                                  args.batch_size))
    t_ours = time.perf_counter() - t0
    diff = max(float(np.abs(ours[p] - r).max()) for p, r in zip(paths, reference))

    print(f"Extraction, {len(paths)} demo images, ResNet50 flatten (100,352-D), random weights; {machine()}")
    print(table(["pipeline", "seconds", "images/s", "speed-up"], [
        ["reference: load_img + model.predict per image", f"{t_ref:.1f}", f"{len(paths) / t_ref:.1f}", "1.0x"],
        [f"imgsim: decode threads + batches of {args.batch_size}", f"{t_ours:.1f}", f"{len(paths) / t_ours:.1f}",
         f"{t_ref / t_ours:.1f}x"],
    ]))
    print(f"max |difference| between the two sets of unit vectors: {diff:.2e} (limit 1e-4)")


if __name__ == "__main__":
    main()
