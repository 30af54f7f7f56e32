"""Extraction speed: the reference per-image loop vs ``imgsim index``, and every forward-pass runtime tried.

Same model (ResNet50, seeded random weights: same shapes and cost as ImageNet), same images, one run:

1. end to end on N demo photos: the notebook's loop, then ``build_index`` ("extracted N in S s") with the
   default runtime and with the plain Keras runtime, each as a rate and a ratio to the loop;
2. the forward pass alone, batches of 16, every runtime tried (Keras, XLA, ONNX Runtime, OpenVINO f32
   latency/throughput, float16 variants), rounds interleaved so that a busy machine hurts them alike;
3. decoding rate (one thread, and with the extractor's workers) vs the model's rate;
4. float16 vs float32: cosine between the vectors of the same photos.

    python bench/extract_speed.py [--images 150] [--skip-onnx]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from common import DEMO, machine, table

from imgsim import decode
from imgsim.build import build_index
from imgsim.models.embedding import normalize
from imgsim.models.native import import_keras
from imgsim.models.resnet50 import ResNet50Backbone
from imgsim.store.generations import load_index
from imgsim.models.runtime import cache_root, convert_to_openvino


def cpu_flags() -> str:
    """The CPU's vector extensions that matter for convolutions."""
    try:
        flags = next(line for line in open("/proc/cpuinfo", encoding="utf-8") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_bf16")
    return " ".join(f for f in wanted if f in flags) or "none of AVX2/AVX-512"


def reference_loop(model, paths: list[Path]) -> tuple[float, dict[str, np.ndarray]]:
    """The notebook's per-image loop, verbatim: load_img, img_to_array, predict, flatten, divide by the norm."""
    keras = import_keras()
    from keras.applications.resnet50 import preprocess_input

    out = {}
    t0 = time.perf_counter()
    for p in paths:
        x = keras.utils.img_to_array(keras.utils.load_img(p, target_size=(224, 224)))
        feat = model.predict(preprocess_input(np.expand_dims(x, 0)), verbose=0).flatten()
        out[p.name] = feat / np.linalg.norm(feat)
    return time.perf_counter() - t0, out


def index_rate(src: Path, runtime: str, workdir: Path) -> tuple[object, dict[str, np.ndarray]]:
    """``build_index`` on the folder: its report and its vectors by file name."""
    ix = workdir / f"ix-{runtime}"
    report = build_index(src, ix, weights="random", pooling="flatten", runtime=runtime)
    index = load_index(ix)
    return report, {Path(e.path).name: np.asarray(index.vectors[i]) for i, e in enumerate(index.entries)}


def model_runtimes(extractor: ResNet50Backbone, skip_onnx: bool) -> dict[str, object]:
    """Every forward pass tried: name -> callable on a preprocessed float32 batch (n, 224, 224, 3)."""
    import tensorflow as tf

    model = extractor.model
    runs: dict[str, object] = {}
    sig = [tf.TensorSpec([None, 224, 224, 3], tf.float32)]
    fn = tf.function(lambda x: model(x, training=False), input_signature=sig)
    runs["Keras / TensorFlow 2.21, oneDNN (tf.function)"] = lambda x: fn(x).numpy()
    xla = tf.function(lambda x: model(x, training=False), input_signature=sig, jit_compile=True)
    runs["Keras / TensorFlow, XLA (jit_compile=True)"] = lambda x: xla(x).numpy()
    import openvino as ov

    xml, _ = convert_to_openvino(model, extractor.weights.identity)
    core = ov.Core()
    ir = core.read_model(xml)
    lat = core.compile_model(ir, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"})
    runs[f"OpenVINO {ov.__version__.split('-')[0]} f32, latency hint (imgsim's default)"] = lambda x: lat(x)[0]
    thr = core.compile_model(ir, "CPU", {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_PRECISION_HINT": "f32"})
    n_req = thr.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    queue = ov.AsyncInferQueue(thr, n_req)

    def throughput(x: np.ndarray) -> np.ndarray:
        parts = np.array_split(x, n_req)
        out: list = [None] * n_req
        queue.set_callback(lambda req, i: out.__setitem__(i, req.get_output_tensor(0).data.copy()))
        for i, part in enumerate(parts):
            queue.start_async({0: part}, i)
        queue.wait_all()
        return np.concatenate(out)

    runs[f"OpenVINO f32, throughput hint ({n_req} requests)"] = throughput
    half = core.compile_model(ir, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f16"})
    actual = half.get_property("INFERENCE_PRECISION_HINT").get_type_name()
    runs[f"OpenVINO --precision float16 (runs as {actual} on this CPU)"] = lambda x: half(x)[0]
    if not skip_onnx:
        try:
            import onnxruntime as ort

            onnx_path = cache_root().parent / "onnx" / f"{xml.parent.name}.onnx"
            if not onnx_path.exists():
                onnx_path.parent.mkdir(parents=True, exist_ok=True)
                t0 = time.perf_counter()
                tmp = onnx_path.with_suffix(".tmp.onnx")
                model.export(str(tmp), format="onnx", verbose=False)  # tf2onnx
                os.replace(tmp, onnx_path)
                print(f"(ONNX export through tf2onnx: {time.perf_counter() - t0:.1f} s, once)")
            session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            runs[f"ONNX Runtime {ort.__version__} (Keras export via tf2onnx)"] = lambda x: session.run(None, {name: x})[0]
        except ImportError as exc:
            print(f"(ONNX Runtime row skipped: {exc})")
    fp16 = ResNet50Backbone("random", "flatten", runtime="keras", precision="float16")
    runs["Keras mixed_float16 (--precision float16 on a GPU)"] = lambda x: fp16._forward(x)
    return runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the forward-pass comparison")
    ap.add_argument("--skip-onnx", action="store_true", help="skip ONNX Runtime (its tf2onnx export is slow)")
    args = ap.parse_args()
    paths = sorted(DEMO.rglob("*.jpg"))[: args.images]
    assert len(paths) == args.images, f"need {args.images} demo images, found {len(paths)}"
    load = os.getloadavg()
    print(f"{machine()}\nCPU vector extensions: {cpu_flags()}\nload average at start: "
          f"{load[0]:.1f} (shared machine: compare ratios within this run)\n")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "photos"
        src.mkdir()
        for p in paths:  # flat copy: one folder of N photos, as a user's folder would be
            shutil.copy(p, src / p.name)
        extractor = ResNet50Backbone("random", "flatten")  # converts once (cached) before anything is timed
        model = extractor.model
        model.predict(np.zeros((1, 224, 224, 3), np.float32), verbose=0)  # warm-up, as a notebook would have

        t_ref, ref = reference_loop(model, sorted(src.iterdir()))
        rep_ov, vec_ov = index_rate(src, "auto", work)
        rep_keras, vec_keras = index_rate(src, "keras", work)
        diff = max(float(np.abs(vec_ov[k] - r).max()) for k, r in ref.items())
        diff_k = max(float(np.abs(vec_keras[k] - r).max()) for k, r in ref.items())
        n = len(paths)
        print(f"1. End to end, {n} demo photos, ResNet50 flatten (100,352-D), random weights")
        print(table(["pipeline", "seconds", "images/s", "vs reference", "max |diff| vs reference"], [
            ["reference: load_img + model.predict per image", f"{t_ref:.1f}", f"{n / t_ref:.1f}", "1.0x", "-"],
            [f"imgsim index, runtime {rep_ov.runtime}", f"{rep_ov.extract_seconds:.1f}",
             f"{rep_ov.images_per_second:.1f}", f"**{n / rep_ov.extract_seconds / (n / t_ref):.1f}x**", f"{diff:.1e}"],
            [f"imgsim index, runtime {rep_keras.runtime}", f"{rep_keras.extract_seconds:.1f}",
             f"{rep_keras.images_per_second:.1f}", f"{n / rep_keras.extract_seconds / (n / t_ref):.1f}x",
             f"{diff_k:.1e}"],
        ]))
        print(f"(imgsim's rate is its own 'extracted {n} in S s' line; decoding on {extractor.workers} threads, "
              f"batches of {extractor.batch_size}; limit for the vectors: 1e-4)\n")

        keras = import_keras()
        from keras.applications.resnet50 import preprocess_input

        pixels = np.stack([decode.model_input(p.read_bytes()) for p in sorted(src.iterdir())[:16]])
        x = preprocess_input(pixels.astype(np.float32))
        runs = model_runtimes(extractor, args.skip_onnx)
        base = normalize(runs[next(iter(runs))](x).reshape(len(x), -1))
        best = {k: float("inf") for k in runs}
        quality = {}
        for name, fn in runs.items():  # warm-up (traces, compiles) and the agreement with Keras float32
            t0 = time.perf_counter()
            v = normalize(np.asarray(fn(x), dtype=np.float32).reshape(len(x), -1))
            quality[name] = (float(np.abs(v - base).max()), float(np.sum(v * base, axis=1).min()),
                             time.perf_counter() - t0)
        for _ in range(args.rounds):
            for name, fn in runs.items():
                t0 = time.perf_counter()
                fn(x)
                best[name] = min(best[name], time.perf_counter() - t0)
        keras_rate = len(x) / best[next(iter(runs))]
        print(f"2. Forward pass alone, batches of {len(x)}, best of {args.rounds} interleaved rounds")
        print(table(["runtime", "images/s", "vs Keras", "max |diff| (unit vectors)", "min cosine", "first call, s"], [
            [name, f"{len(x) / best[name]:.1f}", f"{len(x) / best[name] / keras_rate:.2f}x", f"{q[0]:.1e}",
             f"{q[1]:.6f}", f"{q[2]:.1f}"] for name, q in quality.items()]))
        print("(XLA's first call includes its compilation; faithful rows stay within 1e-4 of Keras)\n")

        t0 = time.perf_counter()
        for p in sorted(src.iterdir()):
            decode.model_input(p.read_bytes())
        one = n / (time.perf_counter() - t0)
        default = next(k for k in runs if "imgsim's default" in k)
        model_rate = len(x) / best[default]
        print("3. Decoding vs the model")
        print(table(["stage", "images/s"], [
            ["decode + resize, 1 thread", f"{one:.1f}"],
            [f"decode, {extractor.workers} worker threads (upper bound: {extractor.workers} x 1 thread)",
             f"<= {one * extractor.workers:.1f}"],
            ["model (imgsim's default runtime)", f"{model_rate:.1f}"],
        ]))
        print(f"decoding is {one / model_rate:.1f}x faster than the model on one thread: it keeps ahead. On a GPU "
              f"imgsim uses up to 16 decode threads (one per core).\n")

        print(f"4. float16 vs float32 on the same {n} demo photos (cosine of the unit vectors)")
        rows = []
        f32 = np.stack([vec_ov[p.name] for p in sorted(src.iterdir())])
        allpix = np.stack([decode.model_input(p.read_bytes()) for p in sorted(src.iterdir())])
        for rt in ("openvino", "keras"):
            half = ResNet50Backbone("random", "flatten", runtime=rt, precision="float16")
            t0 = time.perf_counter()
            v = half.embed(allpix)
            dt = time.perf_counter() - t0
            cos = np.sum(v * f32, axis=1)
            rows.append([half.runtime + (" mixed_float16" if rt == "keras" else ""), f"{n / dt:.1f}",
                         f"{cos.min():.6f}", f"{cos.mean():.6f}"])
        print(table(["float16 path", "images/s (model + preprocessing)", "min cosine", "mean cosine"], rows))


if __name__ == "__main__":
    main()
