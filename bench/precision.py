"""Reduced precision on this CPU: OpenVINO f32 vs bf16 vs f16 on the cached ResNet50 and EfficientNet-Lite0
models (ImageNet weights where present, else the seeded random ones), batch 16, same run, and each one's
cosine to float32 on the demo.

    python bench/precision.py [--rounds 5] [--images N]

Speed: one batch of 16 demo photos (each model's own resize and preprocessing), every precision compiled
once, then ``--rounds`` rounds of one call each, interleaved (a busy machine slows them alike); the median.
A hint the CPU computes in another precision (``f16`` as ``bf16`` where the CPU has no FP16 arithmetic) is
shown as what it runs as. Cosine: every demo photo's unit vector (the backbone's default pooling) in that
precision against float32. Also prints which precision ``--precision float16`` picks here
(:func:`imgsim.models.runtime.reduced_precision`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DEMO, machine, table  # noqa: E402


def models() -> list[tuple[str, Path, object, str, str]]:
    """(name, cached model.xml, preprocess, resample, default pooling) of each backbone with runtimes."""
    from imgsim.models import efficientnet_lite0, resnet50, runtime
    from imgsim.models.native import import_keras
    from imgsim.models.weights import Weights, WeightsError

    out = []
    for name, module, preprocess in (
            ("ResNet50", resnet50, import_keras().applications.resnet50.preprocess_input),
            ("EfficientNet-Lite0", efficientnet_lite0, efficientnet_lite0.preprocess)):
        for weights in ("imagenet", "random"):  # ImageNet weights when present (ResNet50's need a download)
            try:
                identity = module.resolve_weights(Weights.parse(weights)).identity
            except WeightsError:
                continue
            xml = runtime.cache_root() / runtime.cache_key(identity, name) / "model.xml"
            if xml.is_file():
                break
        else:
            raise SystemExit(f"{name}: no converted model in {runtime.cache_root()}; index something with it first")
        backbone = resnet50.ResNet50Backbone if module is resnet50 else efficientnet_lite0.EfficientNetLite0Backbone
        out.append((f"{name} ({weights} weights)", xml, preprocess, getattr(backbone, "resample", "nearest"), backbone.default_pooling))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--images", type=int, default=0, help="demo photos for the cosine (default: all)")
    args = ap.parse_args()
    import openvino as ov

    from imgsim import decode
    from imgsim.discover import discover
    from imgsim.models import runtime
    from imgsim.models.embedding import pool

    print(machine())
    print(f"CPU kind: {runtime.cpu_kind()}; OpenVINO {ov.__version__.split('-')[0]}; "
          f"capabilities {ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES')}")
    files = sorted(discover(DEMO).files, key=lambda f: str(f.path))
    files = files[:args.images] if args.images else files
    core = ov.Core()
    speed_rows, cos_rows = [], []
    for name, xml, preprocess, resample, pooling in models():
        started = time.process_time()
        pixels = np.stack([decode.model_input(Path(f.path).read_bytes(), resample=resample) for f in files])
        x = np.asarray(preprocess(pixels.astype(np.float32)), dtype=np.float32)
        ov_model = core.read_model(xml)
        compiled = {}
        for hint in ("f32", "bf16", "f16"):
            c, actual = runtime._compile(core, ov_model, hint)
            compiled[hint] = (c, actual)
        batch = x[:runtime.PROBE_BATCH]
        for c, _ in compiled.values():
            c(batch)  # warm-up
        times = {h: [] for h in compiled}
        for _ in range(args.rounds):
            for h, (c, _) in compiled.items():
                t = time.perf_counter()
                c(batch)
                times[h].append(time.perf_counter() - t)
        rate = {h: len(batch) / statistics.median(v) for h, v in times.items()}

        def vectors(c) -> np.ndarray:
            out = np.concatenate([pool(np.asarray(c(x[i:i + 16])[0], dtype=np.float32), pooling)
                                  for i in range(0, len(x), 16)])
            return out / np.linalg.norm(out, axis=1, keepdims=True)

        ref = vectors(compiled["f32"][0])
        seen: dict[str, np.ndarray] = {}
        for h, (c, actual) in compiled.items():
            cos = ""
            if h != "f32":
                if actual not in seen:
                    seen[actual] = np.sum(vectors(c) * ref, axis=1)
                cos = f"{seen[actual].min():.5f} / {seen[actual].mean():.5f}"
            speed_rows.append([name, h, runtime.HINT_LABELS.get(actual, actual), f"{rate[h]:.1f}",
                               f"{rate[h] / rate['f32']:.2f}x", cos])
        with tempfile.TemporaryDirectory() as tmp:  # the choice --precision float16 makes, measured afresh
            choice = runtime.reduced_precision(core, ov_model, Path(tmp), note=lambda _: None)
        cos_rows.append([name, pooling, len(files), runtime.HINT_LABELS[choice["hint"]],
                         f"{time.process_time() - started:.0f} s"])
    print(table(["model", "hint", "runs as", "images/s (batch 16, median)", "vs f32",
                 f"min / mean cosine to f32 ({len(files)} demo photos)"], speed_rows))
    print()
    print(table(["model", "pooling", "photos", "--precision float16 picks", "CPU time of this model's rows"],
                cos_rows))


if __name__ == "__main__":
    main()
