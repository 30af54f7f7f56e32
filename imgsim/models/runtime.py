"""Forward-pass runtimes for the Keras backbones: OpenVINO on CPU (fastest measured here), else Keras itself.

The backbone's Keras model stays the one definition of the network and its weights. On a CPU the same model
is converted once per model name and weights identity to OpenVINO IR (``model.export(format="openvino")``),
cached next to Keras' own cache under ``$KERAS_HOME/imgsim/openvino/`` and written atomically, so a killed
conversion leaves no half file. A runtime that is missing or fails gives way to the plain Keras path with a
one-line note.

``--precision float16`` on a CPU means "the fastest reduced precision this CPU has": OpenVINO's ``bf16`` or
``f16``, whichever ran faster on a probe batch, measured once per converted model and CPU kind and cached
beside the converted model (:func:`reduced_precision`). float32 stays the default, the reference.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from imgsim.errors import ImgsimError
from imgsim.models.native import silenced_native_output

RUNTIMES = ("auto", "openvino", "keras")
PRECISIONS = ("float32", "float16")
#: Bump when the cached artefact's layout or the conversion recipe changes.
CACHE_FORMAT = 1
#: The model a caller that names none converts: the reference, for which this module was first written.
DEFAULT_MODEL = "ResNet50"

NoteFn = Callable[[str], None]
#: OpenVINO's reduced-precision hints that ``--precision float16`` chooses between on a CPU (measured).
REDUCED_HINTS = ("bf16", "f16")
HINT_LABELS = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}
#: Images per probe call when the reduced precision is measured (the CPU batch size of the backbones).
PROBE_BATCH = 16
#: The choice of reduced precision, per CPU kind, beside each converted model.
CHOICE_FILE = "reduced-precision.json"
#: CPU flags that decide how fast bf16 and f16 run (AMX tiles, AVX-512 BF16/FP16 instructions).
_PRECISION_FLAGS = re.compile(r"^(amx\w*|avx512_bf16|avx512_fp16|avx512f)$")


def stderr_note(text: str) -> None:
    """Print a one-line note for a person on stderr."""
    print(text, file=sys.stderr, flush=True)


def check_runtime(runtime: str | None, precision: str | None) -> tuple[str, str]:
    """Validate the runtime and precision names (``None`` means ``$IMGSIM_RUNTIME`` or ``auto``; ``float32``)."""
    runtime = (runtime or os.environ.get("IMGSIM_RUNTIME") or "auto").strip().lower()
    precision = (precision or "float32").strip().lower()
    if runtime not in RUNTIMES:
        raise ImgsimError(f"Unknown runtime '{runtime}': use one of {', '.join(RUNTIMES)}.")
    if precision not in PRECISIONS:
        raise ImgsimError(f"Unknown precision '{precision}': use one of {', '.join(PRECISIONS)}.")
    return runtime, precision


@dataclass(frozen=True)
class Conversion:
    """A conversion that ran in this process: how long it took and the process' peak memory meanwhile."""

    seconds: float
    peak_rss_bytes: int
    path: Path
    model: str = DEFAULT_MODEL

    def describe(self) -> str:
        return (f"converted {self.model} to OpenVINO once for these weights in {self.seconds:.1f} s "
                f"(peak memory {self.peak_rss_bytes / 2**30:.2f} GiB); cached at {self.path}")


@dataclass
class Forward:
    """A callable forward pass: preprocessed ``(n, 224, 224, 3)`` float32 in, the feature maps (float32) out."""

    name: str
    run: Callable[[np.ndarray], np.ndarray]
    precision: str = "float32"
    conversion: Conversion | None = None
    fallback_reason: str | None = None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.run(x)


def cache_root() -> Path:
    """Where converted models live: beside Keras' own cache (``$KERAS_HOME``, default ``~/.keras``)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "imgsim" / "openvino"


def cache_key(identity: str, name: str = DEFAULT_MODEL) -> str:
    """A file-name-safe key for one model and weights identity under the installed Keras/TensorFlow/OpenVINO
    versions: ``resnet50-…``, ``efficientnet-lite0-…`` (two models' ``random:0`` never share a file)."""
    import keras
    import openvino

    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    # Every backbone converted here is headless at 224x224x3; the text is ResNet50's from before other models
    # were converted, so the IR already cached for it stays valid.
    parts = [f"format {CACHE_FORMAT}", f"{slug} include_top=False 224x224x3", identity,
             f"keras {keras.__version__}", f"backend {keras.backend.backend()}",
             f"openvino {openvino.__version__}"]
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        parts.append(f"tensorflow {tf.__version__}")  # seeded random initialisers may differ between versions
    return f"{slug}-" + hashlib.sha256("|".join(parts).encode()).hexdigest()[:20]


class _PeakRSS:
    """Samples this process' resident memory on a thread while a block runs (Linux ``/proc``; else ru_maxrss)."""

    def __enter__(self) -> "_PeakRSS":
        self.peak = self._now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _now(self) -> int:
        try:
            with open("/proc/self/statm", encoding="ascii") as fh:
                return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, self._now())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._now())


def _remove_stale_temporaries(root: Path, max_age_s: float = 3600.0) -> None:
    """Delete what killed conversions left behind (hidden ``.tmp-*`` folders older than an hour)."""
    now = time.time()
    for tmp in root.glob(".tmp-*"):
        try:
            if now - tmp.stat().st_mtime > max_age_s:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:
            pass


def convert_to_openvino(model: Any, identity: str, root: Path | None = None,
                        name: str = DEFAULT_MODEL) -> tuple[Path, Conversion | None]:
    """The cached OpenVINO IR of ``model`` (called ``name``) for this weights identity, converting it
    (atomically) if needed.

    Returns the ``model.xml`` path and, when this call converted it, how long that took and its peak memory.
    The IR is written into a hidden temporary folder and renamed into place only once complete.
    """
    root = root or cache_root()
    final = root / cache_key(identity, name)
    xml = final / "model.xml"
    if xml.is_file() and (final / "model.bin").is_file():
        return xml, None
    if final.exists():  # half a folder (a file deleted by hand or by a cleaner): never complete again, so replace it
        shutil.rmtree(final, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(root)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    try:
        started = time.perf_counter()
        with _PeakRSS() as peak, silenced_native_output():
            model.export(str(tmp / "model.xml"), format="openvino", verbose=False)
        seconds = time.perf_counter() - started
        (tmp / "identity.txt").write_text(identity + "\n", encoding="utf-8")
        try:
            os.rename(tmp, final)  # atomic: a reader sees the whole folder or none of it
        except OSError:
            if not xml.is_file():  # pragma: no cover - not a lost race: a real failure
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process finished the same conversion first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return xml, Conversion(seconds, peak.peak, xml, name)


def cpu_kind() -> str:
    """This CPU as the reduced-precision choice depends on it: model name and the flags that matter.

    >>> "[" in cpu_kind()
    True
    """
    name, flags = "", set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not name:
                    name = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = {f for f in value.split() if _PRECISION_FLAGS.match(f)}
    except OSError:
        import platform

        name = platform.processor()
    return f"{name or 'unknown CPU'} [{' '.join(sorted(flags))}]"


def _hint_name(compiled: Any) -> str:
    actual = compiled.get_property("INFERENCE_PRECISION_HINT")
    return actual.get_type_name() if hasattr(actual, "get_type_name") else str(actual)


def _compile(core: Any, ov_model: Any, hint: str) -> tuple[Any, str]:
    """The model compiled for the CPU with ``hint``, and the precision the CPU really computes in."""
    compiled = core.compile_model(ov_model, "CPU", {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint})
    return compiled, _hint_name(compiled)


def images_per_second(compiled: Any, batch: np.ndarray, repeats: int = 3) -> float:
    """Images/s of ``compiled`` on ``batch``: ``repeats`` timed calls after one warm-up."""
    compiled(batch)  # the first call allocates and primes the kernels
    started = time.perf_counter()
    for _ in range(repeats):
        compiled(batch)
    return repeats * len(batch) / (time.perf_counter() - started)


def reduced_precision(core: Any, ov_model: Any, folder: Path, note: NoteFn = stderr_note,
                      name: str = DEFAULT_MODEL) -> dict:
    """The reduced precision this CPU runs ``ov_model`` fastest in: ``{"hint", "images_per_s", "batch"}``.

    Measured once per converted model (``folder``) and CPU kind on a batch of :data:`PROBE_BATCH` (float32
    too, for the ratio in the note), then read from ``folder/reduced-precision.json``. A hint the CPU turns
    into one already measured (``f16`` runs as ``bf16`` on CPUs without FP16 arithmetic) is not timed twice.
    """
    kind = cpu_kind()
    path = folder / CHOICE_FILE
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    entry = known.get(kind) if isinstance(known, dict) else None
    if isinstance(entry, dict) and entry.get("hint") in ("f32", *REDUCED_HINTS):  # f32: nothing faster here
        return entry
    shape = [d.get_length() if d.is_static else PROBE_BATCH for d in ov_model.inputs[0].get_partial_shape()]
    batch = np.random.default_rng(0).normal(size=[PROBE_BATCH, *shape[1:]]).astype(np.float32)
    started = time.perf_counter()
    speed: dict[str, float] = {}
    for hint in ("f32", *REDUCED_HINTS):
        compiled, actual = _compile(core, ov_model, hint)
        if actual not in speed:
            speed[actual] = images_per_second(compiled, batch)
    reduced = {h: speed[h] for h in REDUCED_HINTS if h in speed}
    if not reduced:  # the CPU computes every hint in float32: nothing faster to offer
        reduced = {"f32": speed["f32"]}
    hint = max(reduced, key=reduced.get)
    entry = {"hint": hint, "images_per_s": {h: round(v, 2) for h, v in speed.items()}, "batch": PROBE_BATCH}
    known = dict(known) if isinstance(known, dict) else {}
    known[kind] = entry
    tmp = folder / f".{CHOICE_FILE}.{os.getpid()}.{threading.get_ident()}.tmp"
    try:
        tmp.write_text(json.dumps(known, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)  # atomic: a reader sees the old choices or the new ones
    except OSError as e:  # a read-only cache: the choice stands for this run, and is measured again next time
        note(f"note: the reduced-precision choice could not be cached at {path} ({e.strerror or e})")
    others = ", ".join(f"{HINT_LABELS.get(h, h)} {v / speed['f32']:.2f}x" for h, v in speed.items() if h != hint)
    note(f"note: --precision float16 runs {name} in {HINT_LABELS.get(hint, hint)} on this CPU ({kind}): "
         f"{speed[hint] / speed['f32']:.2f}x float32 at batch {PROBE_BATCH} ({others}); measured once in "
         f"{time.perf_counter() - started:.1f} s, cached at {path}")
    return entry


def keras_forward(model: Any) -> Forward:
    """The model's own forward pass: one traced call for every batch size on TensorFlow, else predict_on_batch."""
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        # One trace for every batch size; predict() would rebuild its pipeline per call.
        fn = tf.function(lambda x: model(x, training=False), reduce_retracing=True,
                         input_signature=[tf.TensorSpec([None, *model.input_shape[1:]], tf.float32)])
        run = lambda x: np.asarray(fn(x).numpy(), dtype=np.float32)
    else:
        run = lambda x: np.asarray(model.predict_on_batch(x), dtype=np.float32)
    precision = "float16" if str(getattr(model, "compute_dtype", "float32")) == "float16" else "float32"
    return Forward(f"keras ({keras.backend.backend()})", run, precision)


def openvino_forward(model: Any, identity: str, precision: str = "float32", root: Path | None = None,
                     note: NoteFn = stderr_note, name: str = DEFAULT_MODEL) -> Forward:
    """The model (called ``name``) converted to OpenVINO IR (cached) and compiled for the CPU at the asked precision."""
    import openvino as ov

    xml, conversion = convert_to_openvino(model, identity, root, name)
    if conversion is not None:
        note(f"note: {conversion.describe()}")
    core = ov.Core()
    ov_model = core.read_model(xml)
    # OpenVINO would run in bfloat16 on CPUs that have it (AVX512_BF16, AMX) unless told otherwise;
    # float32 keeps the vectors within 1e-4 of Keras. float16: whichever reduced precision measured fastest.
    hint = "f32" if precision == "float32" else reduced_precision(core, ov_model, xml.parent, note, name)["hint"]
    compiled, actual = _compile(core, ov_model, hint)
    lock = threading.Lock()  # one compiled model's implicit infer request serves one call at a time

    def run(x: np.ndarray) -> np.ndarray:
        with lock:
            return np.array(compiled(np.ascontiguousarray(x, dtype=np.float32))[0], dtype=np.float32)

    label = HINT_LABELS.get(actual, actual)
    return Forward(f"openvino {ov.__version__.split('-')[0]} (CPU, {label})", run, precision, conversion)


def make_forward(model: Any, identity: str, runtime: str = "auto", precision: str = "float32",
                 device: str = "CPU", note: NoteFn = stderr_note, root: Path | None = None,
                 name: str = DEFAULT_MODEL) -> Forward:
    """The fastest available forward pass for this model: OpenVINO on a CPU, Keras on a GPU or as the fallback.

    ``runtime``: ``auto`` (OpenVINO on CPU, Keras on GPU), ``openvino`` or ``keras``. ``name`` is the model's,
    as people read it (``EfficientNet-Lite0``): it keys the conversion cache and names the model in notes.
    A missing or failing OpenVINO gives the Keras path and one note line, never an exception.
    """
    runtime, precision = check_runtime(runtime, precision)
    if runtime == "keras" or (runtime == "auto" and device != "CPU"):
        return keras_forward(model)
    try:
        return openvino_forward(model, identity, precision, root, note, name)
    except ImportError as exc:
        reason = f"OpenVINO is not installed ({exc})"
    except Exception as exc:  # noqa: BLE001 - any converter/runtime failure must leave the Keras path working
        reason = f"OpenVINO failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"
    note(f"note: {reason}; using the plain Keras forward pass (slower on CPU).")
    forward = keras_forward(model)
    forward.fallback_reason = reason
    return forward
