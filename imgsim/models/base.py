"""Backbones: the models that turn images (and, for CLIP, text) into unit vectors.

One small interface, one module per model, named in :data:`BACKBONES` and imported only when asked for, so
this module never imports an implementation. Each backbone class declares its capabilities at class level
(:class:`Capabilities`): callers ask those, never which model it is. An index records which backbone (and
preset) built it, and a query is only ever embedded by that same backbone. Nothing heavy is imported until
a model is built (:func:`make_backbone`).
"""

from __future__ import annotations

import importlib
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from imgsim.errors import ImgsimError

if TYPE_CHECKING:  # the interface names the weights types; it needs none of their code
    from imgsim.models.weights import ResolvedWeights, Weights

#: Backbone name -> ``module:class`` of its implementation.
BACKBONES = {
    "resnet50": "imgsim.models.resnet50:ResNet50Backbone",
    "efficientnet-lite0": "imgsim.models.efficientnet_lite0:EfficientNetLite0Backbone",
    "clip": "imgsim.models.clip:ClipBackbone",
}
DEFAULT_BACKBONE = "resnet50"


class TextSearchUnavailable(ImgsimError):
    """Text was given to an index whose backbone only understands images."""


def _unknown_backbone(text: str) -> str:
    return (f"Unknown backbone '{text}': use {', '.join(BACKBONES)} or clip:PRESET_OR_DIR "
            "(a keras-hub preset name such as clip_vit_base_patch32, or a local preset folder).")


def backbone_class(name: str) -> type:
    """The class implementing a backbone, imported now (the module imports no TensorFlow at top level)."""
    if name not in BACKBONES:
        raise ImgsimError(_unknown_backbone(name))
    module, _, attr = BACKBONES[name].partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Capabilities:
    """What a backbone can do, read from its class without building a model."""

    #: Whether it embeds text into the space of its image vectors (search by describing).
    supports_text: bool
    #: ``(rows, cols)`` of the spatial feature grid behind its vectors (Why? compares it cell by cell); None: none.
    feature_grid: tuple[int, int] | None
    #: Pooling name -> vector length, for this preset.
    poolings: dict[str, int]
    default_pooling: str
    #: The ``--weights`` word for its published weights (``imagenet``, ``pretrained``).
    pretrained_weights: str
    #: The preset used when none is given; None: it takes no preset.
    default_preset: str | None
    #: ``(height, width)`` of the images its ``embed`` takes.
    input_size: tuple[int, int]
    #: The filter that squashes a whole image to ``input_size`` (a name in ``imgsim.decode.RESAMPLE``):
    #: ``nearest`` as the reference's ``load_img``, ``bicubic`` where the network was evaluated so.
    resample: str
    #: Forward-pass runtimes ``--runtime`` chooses between; empty: no choice (``runtime`` is not passed).
    runtimes: tuple[str, ...]
    #: Arithmetic ``--precision`` chooses between.
    precisions: tuple[str, ...]
    #: The progress stage (:data:`imgsim.progress.STAGE_LABELS`) while its published weights load.
    pretrained_load_stage: str

    @classmethod
    def of(cls, backbone: type, preset: str | None = None) -> "Capabilities":
        """The capabilities a backbone class declares, with its poolings for ``preset``."""
        return cls(backbone.supports_text, backbone.feature_grid, backbone.pooling_dims(preset),
                   backbone.default_pooling, backbone.pretrained_weights, backbone.default_preset,
                   backbone.input_size, backbone.resample, tuple(backbone.runtimes), tuple(backbone.precisions),
                   backbone.pretrained_load_stage)


@dataclass(frozen=True)
class BackboneSpec:
    """Which backbone: ``resnet50``, ``efficientnet-lite0``, or ``clip`` with an optional keras-hub preset name or
    local directory."""

    name: str
    preset: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> "BackboneSpec":
        """Parse a name of :data:`BACKBONES` or ``clip:PRESET_OR_DIR``; anything else says what to write."""
        text = (text or DEFAULT_BACKBONE).strip()
        name, _, preset = text.partition(":")
        name = name.strip().lower()
        if name not in BACKBONES:
            raise ImgsimError(_unknown_backbone(text))
        if preset and backbone_class(name).default_preset is None:
            raise ImgsimError(f"The {name} backbone takes no preset (got '{text}'); its weights are chosen "
                              "with --weights.")
        return cls(name, preset.strip() or None)

    @classmethod
    def from_meta(cls, meta: dict) -> "BackboneSpec":
        """The backbone recorded in an index's metadata (indexes older than CLIP support are ResNet50)."""
        return cls(meta.get("backbone") or DEFAULT_BACKBONE, meta.get("preset"))

    @property
    def spec(self) -> str:
        """The text that :meth:`parse` turns back into this backbone."""
        return f"{self.name}:{self.preset}" if self.preset else self.name

    @property
    def backbone_class(self) -> type:
        """The class that implements this backbone (imports its module, not TensorFlow)."""
        return backbone_class(self.name)

    @property
    def capabilities(self) -> Capabilities:
        """What this backbone (with this preset) can do, without building it."""
        return Capabilities.of(self.backbone_class, self.preset)

    @property
    def supports_text(self) -> bool:
        return self.backbone_class.supports_text

    def parse_weights(self, text: str | None) -> Weights:
        """``--weights`` for this backbone: CLIP also accepts ``pretrained`` (the preset's own weights)."""
        return self.backbone_class.parse_weights(text)

    def default_pooling(self) -> str:
        return self.backbone_class.default_pooling

    def check_pooling(self, pooling: str) -> str:
        """The pooling this backbone can use, or a message saying which ones it has."""
        return self.backbone_class.check_pooling(pooling)


@dataclass(frozen=True)
class TextEmbedding:
    """A text query as the model read it: the unit vector, its token count and whether it was cut short."""

    text: str
    vector: np.ndarray
    tokens: int
    max_tokens: int
    kept: str

    @property
    def truncated(self) -> bool:
        return self.tokens > self.max_tokens

    @property
    def note(self) -> str:
        """A sentence for people when the text was truncated, else ''."""
        if not self.truncated:
            return ""
        return (f"The text is {self.tokens} tokens long; CLIP reads at most {self.max_tokens}, so only the "
                f"beginning was used: “{self.kept}”.")


@runtime_checkable
class Backbone(Protocol):
    """What indexing and querying need from a model.

    A class in :data:`BACKBONES` also declares, at class level, the fields of :class:`Capabilities`
    (``pooling_dims(preset)`` for ``poolings``), ``check_pooling(pooling)`` and ``parse_weights(text)``,
    and is built by :func:`make_backbone` as ``cls(weights=, pooling=, batch_size=)``, plus ``preset=`` when
    it takes presets and ``runtime=``, ``precision=`` when it has runtimes. One with a ``feature_grid`` has
    ``feature_maps(images) -> (n, rows, cols, channels)``.
    """

    name: str
    preset: str | None
    pooling: str
    dims: int
    batch_size: int
    device: str
    weights: ResolvedWeights
    supports_text: bool

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Unit vectors ``(n, dims)`` for uint8 images ``(n, 224, 224, 3)``."""

    def embed_text(self, text: str) -> TextEmbedding:
        """The unit vector of one text query; :class:`TextSearchUnavailable` without ``supports_text``."""


def fixed_pooling_dims(cls: type, preset: str | None = None) -> dict[str, int]:
    """Vector length per pooling of a backbone class without presets: its table ``cls.poolings``."""
    return dict(cls.poolings)


def check_fixed_pooling(cls: type, pooling: str) -> str:
    """The pooling if the backbone class has it in ``cls.poolings``, else a message naming the ones it has."""
    if pooling not in cls.poolings:
        # The default backbone is the one used without --backbone: its message need not name it.
        which = "" if cls.name == DEFAULT_BACKBONE else f" for {cls.name}"
        raise ImgsimError(f"Unknown pooling '{pooling}'{which}: use one of {', '.join(cls.poolings)}.")
    return pooling


def text_search_help(backbone: str, index_dir: str | None = None, src_dir: str | None = None) -> str:
    """Why a text query cannot run on this index, and how to build one where it can (of ``src_dir``, the folder
    the index was built from, when known)."""
    where = f" at {index_dir}" if index_dir else ""
    target = shlex.quote(index_dir.rstrip("/") + "-clip") if index_dir else "CLIP_INDEX_DIR"
    source = shlex.quote(src_dir) if src_dir else "SRC_DIR"
    return (f"Text search needs a CLIP index: the index{where} was built with {backbone}, which only compares "
            f"images. Build a CLIP index of the same folder with\n"
            f"  python -m imgsim index {source} --index {target} --backbone clip\n"
            f"(add --weights random to try it without downloading CLIP), then query it with --text.")


def make_backbone(spec: BackboneSpec, weights: Weights | str | None, pooling: str | None = None,
                  batch_size: int | None = 16, *, runtime: str | None = None,
                  precision: str | None = None) -> Backbone:
    """Build the model for a backbone spec (loads TensorFlow and the weights): the one constructor of every model.

    ``pooling`` defaults to the backbone's own; ``batch_size=None`` lets it choose for the device.
    ``runtime`` and ``precision`` reach backbones that have runtimes (ResNet50, EfficientNet-Lite0); others
    compute in float32.
    """
    cls = spec.backbone_class
    parsed = spec.parse_weights(weights) if weights is None or isinstance(weights, str) else weights
    options: dict = {"pooling": spec.check_pooling(pooling or cls.default_pooling)}
    if cls.default_preset is not None:
        options["preset"] = spec.preset
    if cls.runtimes:
        options.update(runtime=runtime, precision=precision)
    return cls(weights=parsed, batch_size=batch_size, **options)


def default_dims(spec: BackboneSpec, pooling: str) -> int:
    """Vector length without building the model (an empty collection still records its shape)."""
    return spec.capabilities.poolings[pooling]
