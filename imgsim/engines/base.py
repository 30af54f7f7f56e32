"""The engine interface: what runs decoding and the model over the files an index build needs.

An engine is started once with the extraction settings (it reports the weights it will use, so the build can
check them against the index) and then turns files into outcomes: a vector with the file's content hash and
preview, "unchanged" when the content hash matches the old one, or a typed failure. ``build.py`` keeps the
incremental logic (what to extract, checkpoints, writing). Implementations: :mod:`imgsim.engines.local`
(threads in this process) and :mod:`imgsim.engines.ray` (a Ray Data job), made by
:func:`imgsim.engines.make_engine`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable, Iterator, Optional, Protocol, Union

import numpy as np

from imgsim import decode
from imgsim.discover import ImageFile
from imgsim.errors import ImgsimError
from imgsim.models.base import DEFAULT_BACKBONE, Backbone, BackboneSpec
from imgsim.models.weights import ResolvedWeights, Weights


@dataclass(frozen=True)
class ExtractSettings:
    """What to extract with: weights, pooling, the model's batch size, runtime and precision, and the backbone."""

    weights: Weights
    pooling: str
    batch_size: int | None = None
    runtime: str | None = None
    precision: str | None = None
    backbone: BackboneSpec = BackboneSpec(DEFAULT_BACKBONE)

    @property
    def resample(self) -> str:
        """The filter the backbone's input is squashed with (its ``Capabilities.resample``)."""
        return self.backbone.capabilities.resample


@dataclass
class Started:
    """What an engine is ready to extract with, and what getting ready cost (seconds per step)."""

    weights: ResolvedWeights
    pooling: str
    device: str
    batch_size: int
    runtime: str = ""
    precision: str = "float32"
    timings: dict[str, float] = field(default_factory=dict)
    dims: int | None = None
    preset: str | None = None


@dataclass(frozen=True)
class Embedded:
    """A file's unit vector, with the SHA-256 of its bytes and its small JPEG preview."""

    sha256: str
    thumb: bytes
    vector: np.ndarray


@dataclass(frozen=True)
class Unchanged:
    """A file whose mtime changed but whose content hash did not: its old vector still holds."""

    sha256: str


Outcome = Union[Embedded, Unchanged, ImgsimError]


class Engine(Protocol):
    """Runs extraction for an index build."""

    name: str

    def start(self, settings: ExtractSettings) -> Started:
        """Get ready (load or connect); raise :class:`ImgsimError` with a message when it cannot."""

    def extract(self, work: list[ImageFile], known_sha256: dict[str, str]) -> Iterator[tuple[ImageFile, Outcome]]:
        """Yield one outcome per file, in any order; ``known_sha256`` holds the old content hash of changed files."""

    def close(self) -> None:
        """Release what :meth:`start` acquired."""


def decode_file(f: ImageFile, known_sha256: str | None, resample: str) -> tuple[str, bytes, np.ndarray] | Unchanged:
    """Read and decode one file for the model: ``(sha256, preview JPEG, 224x224x3 uint8)``, or Unchanged.

    ``resample`` is the backbone's filter (:attr:`ExtractSettings.resample`). Raises :class:`decode.DecodeError` (with its typed reason) for a file that cannot be used.
    """
    data = decode.read_bytes(f.path)
    sha = hashlib.sha256(data).hexdigest()
    if known_sha256 is not None and known_sha256 == sha:
        return Unchanged(sha)
    im = decode.open_rgb(data)
    return sha, decode.small_jpeg(im), decode.resize_for_model(im, resample)


#: ``model_factory(weights, pooling, batch_size)``: the model an engine extracts with, in place of the one it
#: would build for the backbone (tests and the dashboard pass a cached one).
ModelFactory = Callable[[Weights, str, Optional[int]], Backbone]
