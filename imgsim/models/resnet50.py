"""Feature extraction: Keras ResNet50 (no top, 224x224, caffe preprocessing), batched and pipelined.

TensorFlow is imported only when a :class:`FeatureExtractor` is built, so browsing an existing index
never pays for it. The vectors equal the reference per-image ``model.predict`` path (see tests).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import sys
import tempfile
import time
import urllib.error
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np

from imgsim.errors import ImgsimError

POOLINGS = {"flatten": 7 * 7 * 2048, "avg": 2048}
BACKBONE = "resnet50"
WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + WEIGHTS_FILE
WEIGHTS_MD5 = "4d473c1dd8becc155b73f8504c6f6626"
DEFAULT_SEED = 0

T = TypeVar("T")


class WeightsError(ImgsimError):
    """The requested weights cannot be used; the message says how to supply them."""


def keras_cache_path() -> Path:
    """Where Keras caches the ResNet50 no-top weights (``$KERAS_HOME/models``, default ``~/.keras``).

    Mirrors Keras' own choice, including its fall-back to ``/tmp/.keras`` where the home folder or the
    cache folder cannot be written (a service account on a server): a file put anywhere else is not used.
    """
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = os.path.expanduser("~")
        home = os.path.join(base if os.access(base, os.W_OK) else "/tmp", ".keras")
    if os.path.exists(home) and not os.access(home, os.W_OK):  # keras.utils.get_file's own fall-back
        home = os.path.join("/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir(), ".keras")
    return Path(home) / "models" / WEIGHTS_FILE


def how_to_supply_weights(markdown: bool = False) -> str:
    """The instructions shown wherever ImageNet weights are missing (plain text, or Markdown for the app)."""
    code = (lambda text: f"`{text}`") if markdown else (lambda text: text)
    return (
        f"To supply them offline, download {WEIGHTS_URL} on a machine with internet access, then either\n"
        f"  - put the file at {code(keras_cache_path())} (the Keras cache; used automatically), or\n"
        f"  - pass {code('--weights /path/to/' + WEIGHTS_FILE)} (CLI) or set "
        f"{code('IMGSIM_WEIGHTS=/path/to/' + WEIGHTS_FILE)} (app).\n"
        f"\nTo try imgsim without real weights, use {code('--weights random')} or {code('IMGSIM_WEIGHTS=random')} "
        "(seeded random weights: everything runs, but similarities are not meaningful)."
    )


def _download_failure(exc: BaseException) -> str:
    """The root cause of a failed Keras download ("[Errno -2] Name or service not known"), not its wrapper."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, urllib.error.HTTPError):
            return str(seen)  # "HTTP Error 403: Forbidden"
        if isinstance(seen, urllib.error.URLError):
            return str(seen.reason)
        seen = seen.__cause__ or seen.__context__
    return str(exc)


@dataclass(frozen=True)
class Weights:
    """Which weights a model uses: ``imagenet``, ``random`` (seeded) or a local ``file``."""

    mode: str
    seed: int | None = None
    path: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> "Weights":
        """Parse ``imagenet``, ``random``, ``random:SEED`` or a file path; anything else says what to write."""
        text = (text or "imagenet").strip()
        if text == "imagenet":
            return cls("imagenet")
        if text == "random" or text.startswith("random:"):
            seed_text = text.partition(":")[2] or str(DEFAULT_SEED)
            if not seed_text.isdigit():
                raise WeightsError(f"Invalid weights '{text}': write random or random:SEED with a whole number.")
            return cls("random", seed=int(seed_text))
        path = Path(text).expanduser()
        if not path.is_file():
            raise WeightsError(
                f"Weights file not found: {path}. Use imagenet, random, or the path of an existing "
                f"{WEIGHTS_FILE}.\n" + how_to_supply_weights())
        return cls("file", path=str(path.resolve()))

    @property
    def is_random(self) -> bool:
        return self.mode == "random"

    @property
    def spec(self) -> str:
        """The text that :meth:`parse` turns back into these weights (``random`` for seed 0)."""
        if self.mode == "random":
            return "random" if self.seed == DEFAULT_SEED else f"random:{self.seed}"
        return self.path if self.mode == "file" else "imagenet"


def weights_spec(recorded: dict) -> str:
    """The ``--weights`` value that reproduces weights recorded in an index (``ResolvedWeights.to_json``)."""
    return Weights(recorded["mode"], recorded.get("seed"), recorded.get("path")).spec


@dataclass(frozen=True)
class ResolvedWeights:
    """Weights ready to load: ``identity`` names the values (content hash or seed), ``label`` is for people."""

    mode: str
    identity: str
    label: str
    path: str | None
    seed: int | None

    @property
    def is_random(self) -> bool:
        return self.mode == "random"

    def to_json(self) -> dict:
        return {"mode": self.mode, "identity": self.identity, "label": self.label,
                "path": self.path, "seed": self.seed}


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def resolve_weights(weights: Weights, download_timeout: float = 20.0) -> ResolvedWeights:
    """Find the weight file (downloading ImageNet weights the standard Keras way if needed)."""
    if weights.mode == "random":
        return ResolvedWeights("random", f"random:{weights.seed}",
                               f"random (seed {weights.seed}) - similarities are not meaningful",
                               None, weights.seed)
    if weights.mode == "file":
        path = weights.path
        label = f"file {Path(path).name}"
    else:
        path = str(_imagenet_file(download_timeout))
        label = "ImageNet (Keras)"
    return ResolvedWeights(weights.mode, "sha256:" + _sha256(path), label, path, None)


def _imagenet_file(timeout: float) -> Path:
    cached = keras_cache_path()
    keras = import_keras()
    # Keras downloads only a missing file or one whose MD5 is wrong, and deletes the latter when that fails.
    existed = cached.is_file()
    previous = socket.getdefaulttimeout()
    # Keras' downloader has no timeout; a per-socket timeout makes an offline machine fail fast
    # without cutting short a slow but working download.
    socket.setdefaulttimeout(timeout)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return Path(keras.utils.get_file(WEIGHTS_FILE, WEIGHTS_URL, cache_subdir="models",
                                             file_hash=WEIGHTS_MD5))
    except Exception as exc:  # Keras wraps every download failure in a bare Exception.
        state = (f"{cached} was incomplete or not the right file (its MD5 is not {WEIGHTS_MD5}), so Keras "
                 "removed it to download it again, and the download" if existed else
                 f"{cached} does not exist and the download")
        raise WeightsError(
            f"ImageNet weights for ResNet50 are not available: {state} "
            f"failed ({_download_failure(exc)}).\n" + how_to_supply_weights()) from None
    finally:
        socket.setdefaulttimeout(previous)


# Native log lines TensorFlow prints on import and device probing that say nothing actionable.
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog|[IW]\d{4} |E\d{4} .*(cuInit|cuda_platform|cuda_dnn|"
    r"cuda_blas|cuda_fft)|To enable the following instructions|.*rebuild TensorFlow with the appropriate)")


@contextlib.contextmanager
def _filtered_native_stderr() -> Iterator[None]:
    """Hide TensorFlow's start-up chatter on fd 2 while keeping any real error it prints."""
    from imgsim.models.runtime import NATIVE_OUTPUT_LOCK

    with NATIVE_OUTPUT_LOCK, tempfile.TemporaryFile() as capture:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            for line in capture.read().decode("utf-8", "replace").splitlines():
                if not _NOISE.match(line):
                    sys.stderr.write(line + "\n")


_KERAS: Any = None


def import_keras() -> Any:
    """Import Keras (TensorFlow backend by default) once, with GPU memory growth set before any model."""
    global _KERAS
    if _KERAS is None:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        with _filtered_native_stderr():
            import keras

            if keras.backend.backend() == "tensorflow":
                import tensorflow as tf

                for gpu in tf.config.list_physical_devices("GPU"):
                    try:
                        tf.config.experimental.set_memory_growth(gpu, True)
                    except RuntimeError:
                        pass  # Already initialised by the host program: its setting stands.
                # TensorFlow runs float32 convolutions in TensorFloat-32 (10-bit mantissa) on Ampere and newer
                # GPUs by default: "float32" must mean the reference's float32 (float16 is the fast option).
                tf.config.experimental.enable_tensor_float_32_execution(False)
        _KERAS = keras
    return _KERAS


def device_name() -> str:
    """``GPU`` when the Keras backend sees one, else ``CPU``."""
    keras = import_keras()
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    if keras.backend.backend() == "jax":
        import jax

        return "GPU" if any(d.platform == "gpu" for d in jax.devices()) else "CPU"
    return "CPU"


def build_resnet50(weights: ResolvedWeights, dtype_policy: str | None = None) -> Any:
    """Build ``keras.applications.ResNet50(include_top=False, input_shape=(224, 224, 3))`` with these weights.

    ``dtype_policy="mixed_float16"`` computes in float16 with the same float32 variables (GPU precision option).
    """
    keras = import_keras()
    previous = keras.config.dtype_policy()
    with _filtered_native_stderr():
        if dtype_policy:
            keras.config.set_dtype_policy(dtype_policy)
        try:
            if weights.is_random:
                keras.utils.set_random_seed(weights.seed)
                return keras.applications.ResNet50(include_top=False, weights=None, input_shape=(224, 224, 3))
            try:
                return keras.applications.ResNet50(include_top=False, weights=weights.path, input_shape=(224, 224, 3))
            except (ValueError, OSError, KeyError) as exc:
                raise WeightsError(
                    f"Could not load ResNet50 weights from {weights.path}: {exc}\n"
                    f"Expected the Keras no-top file {WEIGHTS_FILE}.\n" + how_to_supply_weights()) from None
        finally:
            if dtype_policy:
                keras.config.set_dtype_policy(previous)


#: Images per model call by device: 16 saturates 2-4 CPU cores (bench/extract_speed.py); a GPU needs more
#: in flight. GPU sizes are chosen, not measured here (no GPU was at hand): they fit 8 GiB with room to spare.
BATCH_SIZES = {"CPU": 16, "GPU": {"float32": 64, "float16": 128}}


def default_batch_size(device: str, precision: str = "float32") -> int:
    """Images per model call for this device and precision."""
    size = BATCH_SIZES.get(device, 16)
    return size[precision] if isinstance(size, dict) else size


def default_workers(device: str) -> int:
    """Decoding threads: 2 keep ahead of a CPU model (the model is the slow part); a GPU needs every core."""
    return 2 if device == "CPU" else max(2, min(16, os.cpu_count() or 2))


class FeatureExtractor:
    """ResNet50 features for 224x224 RGB arrays: ``flatten`` (7x7x2048, the reference) or ``avg`` (2048)."""

    def __init__(self, weights: Weights | str | None = "imagenet", pooling: str = "flatten",
                 batch_size: int | None = 16, runtime: str | None = None, precision: str | None = None):
        """``batch_size=None`` picks one for the device; ``runtime``: ``auto`` (OpenVINO on CPU when installed,
        Keras on GPU), ``openvino`` or ``keras`` (default ``$IMGSIM_RUNTIME``, else ``auto``); ``precision``:
        ``float32`` (default, the reference) or ``float16``."""
        from imgsim.models.runtime import check_runtime

        if pooling not in POOLINGS:
            raise ImgsimError(f"Unknown pooling '{pooling}': use one of {', '.join(POOLINGS)}.")
        if batch_size is not None and batch_size < 1:
            raise ImgsimError(f"Batch size must be at least 1 (got {batch_size}).")
        runtime, precision = check_runtime(runtime, precision)
        spec = weights if isinstance(weights, Weights) else Weights.parse(weights)
        self.pooling = pooling
        self.dims = POOLINGS[pooling]
        self.weights = resolve_weights(spec)
        self.device = device_name()
        self.batch_size = batch_size or default_batch_size(self.device, precision)
        self.workers = default_workers(self.device)
        keras_runs = runtime == "keras" or (runtime == "auto" and self.device != "CPU")
        started = time.perf_counter()
        self.model = build_resnet50(self.weights)
        # float16 on the Keras path: a mixed-precision twin with the same float32 variables (``self.model``
        # stays the float32 reference); OpenVINO takes the precision as a compile hint instead.
        self._fp16_model = (build_resnet50(self.weights, "mixed_float16")
                            if keras_runs and precision == "float16" else None)
        built = time.perf_counter()
        self._forward = self._make_forward(runtime, precision)
        #: Seconds spent building the Keras model and preparing its runtime (conversion or cached load).
        self.timings = {"model build": built - started, "runtime setup": time.perf_counter() - built}
        self.runtime = self._forward.name
        self.precision = self._forward.precision

    def _make_forward(self, runtime: str = "auto", precision: str = "float32"):
        from imgsim.models.runtime import keras_forward, make_forward

        if self._fp16_model is not None:
            return keras_forward(self._fp16_model)
        forward = make_forward(self.model, self.weights.identity, runtime, precision, self.device)
        if forward.fallback_reason and precision == "float16":
            # OpenVINO was to compute in float16; the Keras path it gave way to must too (the index records it).
            self._fp16_model = build_resnet50(self.weights, "mixed_float16")
            half = keras_forward(self._fp16_model)
            half.fallback_reason = forward.fallback_reason
            return half
        return forward

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Unit-length feature vectors (float32, ``(n, dims)``) for uint8 images of shape ``(n, 224, 224, 3)``."""
        keras = import_keras()
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (224, 224, 3):
            raise ValueError(f"expected images of shape (n, 224, 224, 3), got {images.shape}")
        out = np.empty((len(images), self.dims), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size].astype(np.float32)
            maps = self._forward(keras.applications.resnet50.preprocess_input(chunk))
            out[start:start + len(chunk)] = pool(maps, self.pooling)
        return normalize(out)

    def feature_maps(self, images: np.ndarray) -> np.ndarray:
        """The last convolutional layer's output, ``(n, 7, 7, 2048)`` float32, before pooling (for explanations)."""
        keras = import_keras()
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (224, 224, 3):
            raise ValueError(f"expected images of shape (n, 224, 224, 3), got {images.shape}")
        return np.asarray(self._forward(keras.applications.resnet50.preprocess_input(images.astype(np.float32))),
                          dtype=np.float32)


def pool(maps: np.ndarray, pooling: str) -> np.ndarray:
    """Reduce ``(n, 7, 7, 2048)`` feature maps: ``flatten`` keeps every value in (h, w, c) order."""
    if pooling == "flatten":
        return maps.reshape(len(maps), -1)
    return maps.mean(axis=(1, 2))


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Divide each row by its L2 norm (all-zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


def extract_pipelined(embed: Callable[[np.ndarray], np.ndarray], items: Iterable[T],
                      load: Callable[[T], Any], batch_size: int, workers: int = 2) -> Iterator[tuple[T, Any]]:
    """Run ``load`` on a thread pool ahead of the model and yield ``(item, outcome)`` pairs.

    ``load`` returns a 224x224x3 uint8 array (sent to the model in batches; the outcome is its vector)
    or any other value (passed through). An :class:`ImgsimError` it raises becomes the outcome, so one bad
    file never stops the run. Decoding of the next batches overlaps the model's work on this one.
    """

    def guarded(item: T) -> Any:
        try:
            return load(item)
        except ImgsimError as exc:
            return exc

    lookahead = max(2 * batch_size, 2 * workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="imgsim-decode") as pool_:
        source = iter(items)
        futures: deque = deque()
        batch: list[tuple[T, np.ndarray]] = []

        def top_up() -> None:
            while len(futures) < lookahead:
                try:
                    item = next(source)
                except StopIteration:
                    return
                futures.append((item, pool_.submit(guarded, item)))

        def flush() -> Iterator[tuple[T, Any]]:
            vectors = embed(np.stack([arr for _, arr in batch]))
            done = [(item, vec) for (item, _), vec in zip(batch, vectors)]
            batch.clear()
            yield from done

        top_up()
        while futures:
            item, future = futures.popleft()
            outcome = future.result()
            top_up()
            if isinstance(outcome, np.ndarray):
                batch.append((item, outcome))
                if len(batch) >= batch_size:
                    yield from flush()
            else:
                yield item, outcome
        if batch:
            yield from flush()
