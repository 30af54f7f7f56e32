"""Backbones: the models that turn images (and, for CLIP, text) into unit vectors.

One small interface, one module per model: ResNet50 lives in :mod:`imgsim.models.resnet50` (wrapped here as it
is), CLIP in :mod:`imgsim.models.clip`. An index records which backbone (and preset) built it, and a query is
only ever embedded by that same backbone. Nothing heavy is imported until a model is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from imgsim.errors import ImgsimError
from imgsim.models.resnet50 import POOLINGS, FeatureExtractor, ResolvedWeights, Weights

RESNET50 = "resnet50"
CLIP = "clip"
BACKBONES = (RESNET50, CLIP)
DEFAULT_BACKBONE = RESNET50
#: CLIP has one embedding per image: the projection of its class token.
CLIP_POOLING = "projection"


class TextSearchUnavailable(ImgsimError):
    """Text was given to an index whose backbone only understands images."""


@dataclass(frozen=True)
class BackboneSpec:
    """Which backbone: ``resnet50``, or ``clip`` with an optional keras-hub preset name or local directory."""

    name: str
    preset: str | None = None

    @classmethod
    def parse(cls, text: str | None) -> "BackboneSpec":
        """Parse ``resnet50``, ``clip`` or ``clip:PRESET_OR_DIR``; anything else says what to write."""
        text = (text or DEFAULT_BACKBONE).strip()
        name, _, preset = text.partition(":")
        name = name.strip().lower()
        if name not in BACKBONES:
            raise ImgsimError(f"Unknown backbone '{text}': use resnet50, clip or clip:PRESET_OR_DIR "
                              "(a keras-hub preset name such as clip_vit_base_patch32, or a local preset folder).")
        if name == RESNET50 and preset:
            raise ImgsimError(f"The resnet50 backbone takes no preset (got '{text}'); its weights are chosen "
                              "with --weights.")
        return cls(name, preset.strip() or None)

    @classmethod
    def from_meta(cls, meta: dict) -> "BackboneSpec":
        """The backbone recorded in an index's metadata (indexes older than CLIP support are ResNet50)."""
        return cls(meta.get("backbone") or RESNET50, meta.get("preset"))

    @property
    def spec(self) -> str:
        """The text that :meth:`parse` turns back into this backbone."""
        return f"{self.name}:{self.preset}" if self.preset else self.name

    @property
    def supports_text(self) -> bool:
        return self.name == CLIP

    def parse_weights(self, text: str | None) -> Weights:
        """``--weights`` for this backbone: CLIP also accepts ``pretrained`` (the preset's own weights)."""
        if self.name == CLIP and text is not None and text.strip() == "pretrained":
            text = "imagenet"  # Weights' name for "the model's published weights"
        return Weights.parse(text)

    def default_pooling(self) -> str:
        return CLIP_POOLING if self.name == CLIP else "flatten"

    def check_pooling(self, pooling: str) -> str:
        """The pooling this backbone can use, or a message saying which ones it has."""
        allowed = (CLIP_POOLING,) if self.name == CLIP else tuple(POOLINGS)
        if pooling not in allowed:
            if self.name == CLIP:
                raise ImgsimError(f"CLIP has a single image embedding ('{CLIP_POOLING}'); --pooling {pooling} "
                                  "applies to resnet50 only.")
            raise ImgsimError(f"Unknown pooling '{pooling}': use one of {', '.join(POOLINGS)}.")
        return pooling


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
    """What indexing and querying need from a model."""

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
        """The unit vector of one text query (backbones with ``supports_text`` only)."""


class ResNet50Backbone:
    """The reference ResNet50 :class:`~imgsim.models.resnet50.FeatureExtractor` seen through the backbone interface."""

    name = RESNET50
    preset = None
    supports_text = False

    def __init__(self, extractor: FeatureExtractor):
        self.extractor = extractor

    pooling = property(lambda self: self.extractor.pooling)
    dims = property(lambda self: self.extractor.dims)
    batch_size = property(lambda self: self.extractor.batch_size)
    device = property(lambda self: self.extractor.device)
    weights = property(lambda self: self.extractor.weights)

    def embed(self, images: np.ndarray) -> np.ndarray:
        return self.extractor.embed(images)

    def embed_text(self, text: str) -> TextEmbedding:
        raise TextSearchUnavailable(text_search_help(RESNET50))

    def __getattr__(self, name: str):
        # The extractor's other abilities (feature maps for explanations; precision, runtime, workers and
        # timings for indexing) are the wrapper's too, so a cached model serves both.
        if name == "extractor":
            raise AttributeError(name)
        return getattr(self.extractor, name)


def backbone_name(model: object) -> str:
    """The backbone a model object implements (a bare FeatureExtractor is ResNet50)."""
    return getattr(model, "name", RESNET50)


def text_search_help(backbone: str, index_dir: str | None = None) -> str:
    """Why a text query cannot run on this index, and how to build one where it can."""
    where = f" at {index_dir}" if index_dir else ""
    target = index_dir.rstrip("/") + "-clip" if index_dir else "CLIP_INDEX_DIR"
    return (f"Text search needs a CLIP index: the index{where} was built with {backbone}, which only compares "
            f"images. Build a CLIP index of the same folder with\n"
            f"  python -m imgsim index SRC_DIR --index {target} --backbone clip\n"
            f"(add --weights random to try it without downloading CLIP), then query it with --text.")


def make_backbone(spec: BackboneSpec, weights: Weights | str | None, pooling: str | None = None,
                  batch_size: int = 16) -> Backbone:
    """Build the model for a backbone spec with these weights (loads TensorFlow and the weights)."""
    parsed = weights if isinstance(weights, Weights) else Weights.parse(weights)
    pooling = spec.check_pooling(pooling or spec.default_pooling())
    if spec.name == CLIP:
        from imgsim.models.clip import ClipBackbone

        return ClipBackbone(spec.preset, parsed, batch_size=batch_size)
    return ResNet50Backbone(FeatureExtractor(weights, pooling, batch_size))  # it parses the weights itself


def default_dims(spec: BackboneSpec, pooling: str) -> int:
    """Vector length without building the model (an empty collection still records its shape)."""
    if spec.name == CLIP:
        from imgsim.models.clip import preset_dims

        return preset_dims(spec.preset)
    return POOLINGS[pooling]
