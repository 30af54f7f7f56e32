"""The forward-pass runtime: OpenVINO faithful to Keras, converted once per weights identity, cached
atomically, and a missing or failing runtime falls back to Keras with one note line."""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from imgsim import decode
from imgsim.models import native, runtime
from imgsim.errors import ImgsimError
from imgsim.models.native import import_keras
from imgsim.models.resnet50 import ResNet50Backbone

from .conftest import make_photo, reference_vector

ov = pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("runtime")
    return [make_photo(root / f"q{i}.jpg", seed=70 + i, size=(180 + 17 * i, 140)) for i in range(5)]


@pytest.fixture(scope="module")
def tiny_model():
    """A small Keras model: the cache mechanics do not depend on the model's size."""
    keras = import_keras()
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Conv2D(2, 1)(x))


def test_default_cpu_runtime_is_openvino_and_faithful_to_the_reference_loop(random_extractor, photos):
    assert random_extractor.runtime.startswith("openvino") and random_extractor.runtime.endswith("(CPU, float32)")
    batch = np.stack([decode.model_input(p.read_bytes()) for p in photos])
    ours = random_extractor.embed(batch)
    ref = np.stack([reference_vector(random_extractor.model, p) for p in photos])
    assert np.abs(ours - ref).max() <= 1e-4


def test_keras_runtime_is_available_on_request(photos):
    keras_path = ResNet50Backbone("random", "avg", runtime="keras")
    assert keras_path.runtime == "keras (tensorflow)" and keras_path.precision == "float32"
    openvino_path = ResNet50Backbone("random", "avg", runtime="openvino")
    # Asked for by name, OpenVINO is what runs (a silent fall back to Keras would compare Keras with itself).
    assert openvino_path.runtime == f"openvino {ov.__version__.split('-')[0]} (CPU, float32)"
    assert openvino_path._forward.fallback_reason is None
    batch = np.stack([decode.model_input(p.read_bytes()) for p in photos])
    assert np.abs(keras_path.embed(batch) - openvino_path.embed(batch)).max() <= 1e-4


@pytest.mark.parametrize("backend_runtime", ["keras", "openvino"])
def test_float16_precision_stays_within_cosine_0_999_of_float32(backend_runtime, random_extractor, photos):
    half = ResNet50Backbone("random", "flatten", runtime=backend_runtime, precision="float16")
    assert half.precision == "float16"
    if backend_runtime == "openvino":  # the CPU picks float16 or bfloat16 and says which
        assert half.runtime.startswith("openvino") and ("float16" in half.runtime or "bfloat16" in half.runtime)
    else:
        assert half._fp16_model.compute_dtype == "float16"
        for a, b in zip(half._fp16_model.get_weights()[:6], random_extractor.model.get_weights()[:6]):
            np.testing.assert_array_equal(a, b)  # same variables, float16 arithmetic
    batch = np.stack([decode.model_input(p.read_bytes()) for p in photos])
    cosine = np.sum(half.embed(batch) * random_extractor.embed(batch), axis=1)
    assert cosine.min() >= 0.999, cosine


def test_conversion_runs_once_per_weights_identity_and_reports_time_and_memory(tiny_model, tmp_path):
    notes: list[str] = []
    first = runtime.openvino_forward(tiny_model, "random:1", root=tmp_path, note=notes.append)
    assert first.conversion is not None and len(notes) == 1
    assert notes[0].startswith("note: converted ResNet50 to OpenVINO once for these weights in ")
    assert "s (peak memory " in notes[0] and "GiB); cached at " + str(tmp_path) in notes[0]
    assert first.conversion.peak_rss_bytes > 0 and first.conversion.seconds > 0
    again = runtime.openvino_forward(tiny_model, "random:1", root=tmp_path, note=notes.append)
    assert again.conversion is None and len(notes) == 1  # read from the cache, silently
    other = runtime.openvino_forward(tiny_model, "sha256:" + "0" * 64, root=tmp_path, note=notes.append)
    assert other.conversion is not None and len(notes) == 2
    folders = sorted(p.name for p in tmp_path.iterdir())
    assert len(folders) == 2 and all(f.startswith("resnet50-") for f in folders)
    assert (tmp_path / folders[0] / "model.xml").is_file() and (tmp_path / folders[0] / "model.bin").is_file()
    x = np.random.default_rng(0).normal(size=(3, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(again(x), np.asarray(tiny_model(x)), atol=1e-5)


def test_cache_lives_beside_the_keras_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "kh"))
    assert runtime.cache_root() == tmp_path / "kh" / "imgsim" / "openvino"


class _KilledExport:
    """A model whose export writes part of its output and then dies, like a conversion killed half-way."""

    def __init__(self, exc: BaseException):
        self.exc = exc

    def export(self, filepath, format, verbose):
        with open(filepath, "w") as fh:
            fh.write("<?xml half")
        raise self.exc


def test_killed_conversion_leaves_no_half_file(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        runtime.convert_to_openvino(_KilledExport(KeyboardInterrupt()), "random:9", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_leftovers_of_a_killed_process_are_removed_later(tiny_model, tmp_path):
    stale = tmp_path / ".tmp-resnet50-abc-xyz"
    stale.mkdir()
    (stale / "model.xml").write_text("half")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    runtime.convert_to_openvino(tiny_model, "random:1", tmp_path)
    assert not stale.exists()


def test_a_cache_folder_missing_a_file_is_converted_again_not_given_up_on(tiny_model, tmp_path):
    """A folder whose model.bin was deleted used to block the rename for ever: every run converted, failed
    with "Directory not empty" and fell back to the slow Keras path."""
    xml, _ = runtime.convert_to_openvino(tiny_model, "random:1", tmp_path)
    (xml.parent / "model.bin").unlink()
    again, conversion = runtime.convert_to_openvino(tiny_model, "random:1", tmp_path)
    assert conversion is not None and again == xml and (xml.parent / "model.bin").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [xml.parent.name]


def test_failing_conversion_falls_back_to_keras_with_one_note(monkeypatch, tmp_path, tiny_model):
    notes: list[str] = []
    monkeypatch.setattr(tiny_model, "export", _KilledExport(RuntimeError("converter exploded\nsecond line")).export)
    forward = runtime.make_forward(tiny_model, "random:9", "auto", "float32", "CPU", note=notes.append,
                                   root=tmp_path)
    assert notes == ["note: OpenVINO failed: RuntimeError: converter exploded; using the plain Keras forward pass "
                     "(slower on CPU)."]
    assert forward.fallback_reason == "OpenVINO failed: RuntimeError: converter exploded"
    assert list(tmp_path.iterdir()) == []
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(forward(x), np.asarray(tiny_model(x)), atol=1e-6)


def test_missing_openvino_falls_back_to_keras_with_one_note(monkeypatch, tiny_model, tmp_path):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what an absent package looks like to import
    notes: list[str] = []
    forward = runtime.make_forward(tiny_model, "random:1", "auto", "float32", "CPU", note=notes.append,
                                   root=tmp_path)
    assert forward.name == "keras (tensorflow)"
    assert len(notes) == 1 and notes[0].startswith("note: OpenVINO is not installed (")
    assert notes[0].endswith("; using the plain Keras forward pass (slower on CPU).")
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(forward(x), np.asarray(tiny_model(x)), atol=1e-6)


def test_gpu_device_uses_keras_without_converting(tiny_model, tmp_path):
    notes: list[str] = []
    forward = runtime.make_forward(tiny_model, "random:1", "auto", "float32", "GPU", note=notes.append,
                                   root=tmp_path)
    assert forward.name.startswith("keras") and notes == [] and list(tmp_path.iterdir()) == []


def test_runtime_and_precision_names_are_checked(monkeypatch):
    with pytest.raises(ImgsimError, match="Unknown runtime 'tensorrt': use one of auto, openvino, keras."):
        runtime.check_runtime("tensorrt", None)
    with pytest.raises(ImgsimError, match="Unknown precision 'int8': use one of float32, float16."):
        ResNet50Backbone("random", "avg", precision="int8")
    monkeypatch.setenv("IMGSIM_RUNTIME", "keras")
    assert runtime.check_runtime(None, None) == ("keras", "float32")


def test_float16_survives_the_fallback_to_keras(monkeypatch):
    """Without a working OpenVINO, --precision float16 must still compute in float16, not quietly in float32
    under an index that records float16."""
    def broken(*args, **kwargs):
        raise RuntimeError("no CPU plugin")

    monkeypatch.setattr(runtime, "openvino_forward", broken)
    half = ResNet50Backbone("random", "avg", runtime="auto", precision="float16")
    assert half.precision == "float16" and half.runtime == "keras (tensorflow)"
    assert half._forward.fallback_reason == "OpenVINO failed: RuntimeError: no CPU plugin"
    assert half._fp16_model.compute_dtype == "float16"


def test_two_threads_hiding_native_output_leave_stderr_where_it_was():
    """The app builds models on several threads (an indexing job, an upload): each swaps fd 2 for a while.
    Overlapping swaps must not leave the process writing its stderr into a dead temporary file."""
    import threading

    before = os.fstat(2)
    a_in, b_in = threading.Event(), threading.Event()

    def a():
        with native.filtered_native_stderr():
            a_in.set()
            b_in.wait(1.0)  # B swaps fd 2 meanwhile, unless it has to wait its turn

    def b():
        a_in.wait(5.0)
        with native.silenced_native_output():
            b_in.set()
            time.sleep(0.2)  # ... and A finishes first

    threads = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = os.fstat(2)
    assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino)


def test_new_weights_in_the_same_file_never_reuse_the_converted_model(tmp_path):
    """The OpenVINO cache is keyed by the weights' content, not their path: overwriting the file gives another
    identity, hence another cache folder (and a conversion of its own, as the identity test above shows)."""
    from imgsim.models import resnet50 as extract
    from imgsim.models.weights import Weights

    path = tmp_path / extract.WEIGHTS_FILE
    path.write_bytes(b"first weights")
    first = extract.resolve_weights(Weights.parse(str(path)))
    path.write_bytes(b"other weights")
    second = extract.resolve_weights(Weights.parse(str(path)))
    assert first.path == second.path and first.identity != second.identity
    assert runtime.cache_key(first.identity) != runtime.cache_key(second.identity)
    assert runtime.cache_key("random:1") != runtime.cache_key("random:2")


# --- reduced precision: the fastest the CPU has, measured once per model and CPU kind (issue 20, item 18) ---

class _Probe:
    """Stands in for OpenVINO's compile and timing: a CPU where each hint runs at a given speed."""

    def __init__(self, speeds: dict[str, float], becomes: dict[str, str] | None = None):
        self.speeds, self.becomes, self.timed = speeds, becomes or {}, []

    def compile(self, core, ov_model, hint):
        actual = self.becomes.get(hint, hint)
        return actual, actual

    def rate(self, compiled, batch, repeats=3):
        assert batch.shape == (runtime.PROBE_BATCH, 8, 8, 3)
        self.timed.append(compiled)
        return self.speeds[compiled]


@pytest.mark.parametrize("speeds, becomes, chosen", [
    ({"f32": 44.5, "bf16": 220.2, "f16": 28.3}, {}, "bf16"),  # the AMX Xeon
    ({"f32": 40.0, "bf16": 60.0, "f16": 90.0}, {}, "f16"),     # a CPU with fast FP16 arithmetic
    ({"f32": 40.0, "bf16": 75.0}, {"f16": "bf16"}, "bf16"),   # this AMD EPYC: f16 runs as bf16, timed once
    ({"f32": 40.0}, {"f16": "f32", "bf16": "f32"}, "f32"),    # an AVX2 CPU: both run as float32, still once
])
def test_float16_on_a_cpu_runs_the_fastest_reduced_precision_measured_once(
        monkeypatch, tiny_model, tmp_path, speeds, becomes, chosen):
    probe = _Probe(speeds, becomes)
    monkeypatch.setattr(runtime, "_compile", probe.compile)
    monkeypatch.setattr(runtime, "images_per_second", probe.rate)
    monkeypatch.setattr(runtime, "cpu_kind", lambda: "Test CPU [amx_bf16 avx512_bf16]")
    notes: list[str] = []
    first = runtime.openvino_forward(tiny_model, "random:1", "float16", tmp_path, notes.append)
    label = runtime.HINT_LABELS[chosen]
    assert first.name.endswith(f"(CPU, {label})") and first.precision == "float16"
    assert probe.timed == list(speeds)  # float32 and every distinct reduced precision, each timed once
    others = ", ".join(f"{runtime.HINT_LABELS[h]} {v / speeds['f32']:.2f}x" for h, v in speeds.items() if h != chosen)
    assert notes[1].startswith(f"note: --precision float16 runs ResNet50 in {label} on this CPU (Test CPU "
                               f"[amx_bf16 avx512_bf16]): {speeds[chosen] / speeds['f32']:.2f}x float32 at batch 16 "
                               f"({others}); measured once in ")
    folder = next(tmp_path.glob("resnet50-*"))
    assert notes[1].endswith(f"cached at {folder / runtime.CHOICE_FILE}")
    again = runtime.openvino_forward(tiny_model, "random:1", "float16", tmp_path, notes.append)
    assert again.name == first.name and len(probe.timed) == len(speeds) and len(notes) == 2  # read back
    monkeypatch.setattr(runtime, "cpu_kind", lambda: "Other CPU [avx512f]")  # another kind sharing the cache
    runtime.openvino_forward(tiny_model, "random:1", "float16", tmp_path, notes.append)
    assert len(probe.timed) == 2 * len(speeds) and len(notes) == 3
    import json

    saved = json.loads((folder / runtime.CHOICE_FILE).read_text())
    assert set(saved) == {"Test CPU [amx_bf16 avx512_bf16]", "Other CPU [avx512f]"}
    assert saved["Other CPU [avx512f]"]["hint"] == chosen and saved["Other CPU [avx512f]"]["batch"] == 16


def test_float32_never_measures_or_asks_for_reduced_precision(monkeypatch, tiny_model, tmp_path):
    probe = _Probe({"f32": 1.0})
    monkeypatch.setattr(runtime, "_compile", probe.compile)
    monkeypatch.setattr(runtime, "images_per_second", probe.rate)
    forward = runtime.openvino_forward(tiny_model, "random:1", "float32", tmp_path, lambda _: None)
    assert forward.name.endswith("(CPU, float32)") and probe.timed == []
    assert not list(tmp_path.glob(f"*/{runtime.CHOICE_FILE}"))


def test_on_this_cpu_the_measured_choice_is_real_and_says_which(tiny_model, tmp_path):
    """No fake: OpenVINO compiles and times each hint here; the forward pass names what it computes in and
    stays close to float32."""
    import json

    notes: list[str] = []
    half = runtime.openvino_forward(tiny_model, "random:1", "float16", tmp_path, notes.append)
    saved = json.loads(next(tmp_path.glob(f"*/{runtime.CHOICE_FILE}")).read_text())[runtime.cpu_kind()]
    assert saved["hint"] in runtime.REDUCED_HINTS + ("f32",) and saved["images_per_s"]["f32"] > 0
    compiled = ov.Core().compile_model(next(tmp_path.glob("*/model.xml")), "CPU",
                                       {"INFERENCE_PRECISION_HINT": saved["hint"]})
    assert half.name.endswith(f"(CPU, {runtime.HINT_LABELS[runtime._hint_name(compiled)]})")
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype(np.float32)
    np.testing.assert_allclose(half(x), np.asarray(tiny_model(x)), atol=0.05)


def test_a_float16_index_records_the_precision_it_really_ran_in(photo_dir, tmp_path):
    """The index says which reduced precision was used (``info`` shows it; the vectors are compared with it)."""
    from imgsim.build import build_index
    from imgsim.store.generations import load_index

    half = ResNet50Backbone("random", "avg", precision="float16")
    build_index(photo_dir, tmp_path / "ix", weights="random", pooling="avg", precision="float16",
                model_factory=lambda w, p, b: half)
    meta = load_index(tmp_path / "ix").meta
    assert meta["precision"] == "float16" and meta["runtime"] == half.runtime
    assert half.runtime.startswith("openvino") and half.runtime.endswith(("(CPU, bfloat16)", "(CPU, float16)"))
