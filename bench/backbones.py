"""The three backbones side by side on the same demo images: cost per 1,000 images and bytes per image.

ResNet50 and CLIP run with seeded random weights unless real ones are given (their ImageNet / preset weights
download, and this machine has no internet); the cost is the same, the similarities are not. EfficientNet-Lite0
runs with its real ImageNet weights (installed by pip). ResNet50 and EfficientNet-Lite0 are timed on both of
their forward-pass runtimes (Keras and OpenVINO); CLIP has one. Each image is decoded with its backbone's own
resize filter (``Capabilities.resample``), and decoding is timed apart from the model. Cost is CPU time (all
threads of the process: what the work costs in core-seconds, however busy the shared cores are), beside the
wall time of the least disturbed pass. OpenVINO conversions go to a fresh temporary cache, so their one-off
cost is measured too.

    python bench/backbones.py [--images 64] [--batch-size 16] [--repeats 3] [--resnet-weights random|PATH]
                              [--clip-weights random|pretrained]
"""

from __future__ import annotations

import argparse
import os
import re
import tempfile
import time

import numpy as np

from common import DEMO, machine, table

from imgsim import decode
from imgsim.models.base import BACKBONES, BackboneSpec, make_backbone


def best_passes(models: list, images: list, repeats: int, batch: int) -> list[tuple[float, float]]:
    """Each model's fastest pass over its images, as (wall seconds, CPU seconds of this process).

    One warm-up batch first (tracing, first allocations), then ``repeats`` rounds taking every model in turn,
    so that load from elsewhere on the shared cores falls on all of them alike; each keeps its least disturbed
    pass. CPU time counts every thread of the process (Keras', OpenVINO's) and waits for no one else.
    """
    for model, pixels in zip(models, images):
        model.embed(pixels[:batch])
    best = [(float("inf"), float("inf"))] * len(models)
    for _ in range(repeats):
        for i, (model, pixels) in enumerate(zip(models, images)):
            wall, cpu = time.perf_counter(), time.process_time()
            model.embed(pixels)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            best[i] = (min(best[i][0], wall), min(best[i][1], cpu))
    return best


def decode_ms(paths: list, resample: str, repeats: int) -> tuple[np.ndarray, float]:
    """The model inputs of ``paths`` with this filter, and the CPU milliseconds an image takes to decode (best
    pass; decoding runs on one thread)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.process_time()
        images = np.stack([decode.model_input(p.read_bytes(), resample=resample) for p in paths])
        best = min(best, time.process_time() - started)
    return images, best * 1000 / len(paths)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per model (the best counts)")
    ap.add_argument("--resnet-weights", default="random", help="random, or the no-top .h5 file")
    ap.add_argument("--clip-weights", default="random", help="random, or pretrained (downloads 605 MB)")
    args = ap.parse_args()
    os.environ["KERAS_HOME"] = tempfile.mkdtemp(prefix="imgsim-bench-")  # conversions measured, not cached
    os.environ.pop("IMGSIM_RUNTIME", None)
    paths = sorted(DEMO.rglob("*.jpg"))[: args.images]
    weights = {"resnet50": args.resnet_weights, "efficientnet-lite0": "imagenet", "clip": args.clip_weights}

    built, inputs = [], {}
    for name in BACKBONES:
        spec = BackboneSpec.parse(name)
        caps = spec.capabilities
        if caps.resample not in inputs:
            inputs[caps.resample] = decode_ms(paths, caps.resample, args.repeats)
        for runtime in [r for r in caps.runtimes if r != "auto"] or [None]:
            started = time.perf_counter()
            model = make_backbone(spec, weights[name], caps.default_pooling, args.batch_size, runtime=runtime)
            built.append((name, caps, model, time.perf_counter() - started))
    passes = best_passes([m for _, _, m, _ in built], [inputs[c.resample][0] for _, c, _, _ in built],
                         args.repeats, args.batch_size)
    rows = []
    for (name, caps, model, build_s), (wall, cpu) in zip(built, passes):
        per_image = lambda seconds: seconds * 1000 / len(paths)
        decode_cpu = inputs[caps.resample][1]
        dims = ", ".join(f"{pooling} {n:,} ({n * 4 / 1024:,.0f} KiB)" for pooling, n in caps.poolings.items())
        rows.append([name, re.split(r" - |, ", model.weights.label)[0], getattr(model, "runtime", "keras"),
                     f"{caps.resample}, {decode_cpu:.1f} ms", f"{per_image(wall):.1f} ms", f"{per_image(cpu):.1f} ms",
                     f"{per_image(cpu) + decode_cpu:.0f} s", dims, f"{build_s:.1f} s"])
    load = os.getloadavg()[0]
    print(f"{machine()}; {len(paths)} demo images, batch {args.batch_size}, float32, best of {args.repeats} "
          f"passes; load average {load:.1f} at the end\n")
    print(table(["backbone", "weights", "forward pass", "resize, decode CPU/image", "model wall/image",
                 "model CPU/image", "CPU per 1,000 images (decode + model)", "bytes/image by pooling (float32)",
                 "build (+ conversion)"], rows))


if __name__ == "__main__":
    main()
