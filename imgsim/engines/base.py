"""Extraction engines: what runs decoding and the model over the files an index build needs.

An engine is started once with the extraction settings (it reports the weights it will use, so the build can
check them against the index) and then turns files into outcomes: a vector with the file's content hash and
preview, "unchanged" when the content hash matches the old one, or a typed failure. ``build.py`` keeps the
incremental logic (what to extract, checkpoints, writing); the local engine runs threads in this process,
``engine_ray.RayEngine`` runs a Ray Data job.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Protocol, Union

import numpy as np

from imgsim import decode
from imgsim.discover import ImageFile
from imgsim.errors import ImgsimError
from imgsim.models.embedding import extract_pipelined
from imgsim.models.native import import_keras
from imgsim.models.resnet50 import ResNet50Backbone
from imgsim.models.weights import ResolvedWeights, Weights

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class ExtractSettings:
    """What to extract with: weights, pooling and the model's batch size, runtime and precision."""

    weights: Weights
    pooling: str
    batch_size: int | None = None
    runtime: str | None = None
    precision: str | None = None


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


def decode_file(f: ImageFile, known_sha256: str | None) -> tuple[str, bytes, np.ndarray] | Unchanged:
    """Read and decode one file for the model: ``(sha256, preview JPEG, 224x224x3 uint8)``, or Unchanged.

    Raises :class:`decode.DecodeError` (with its typed reason) for a file that cannot be used.
    """
    data = decode.read_bytes(f.path)
    sha = hashlib.sha256(data).hexdigest()
    if known_sha256 is not None and known_sha256 == sha:
        return Unchanged(sha)
    im = decode.open_rgb(data)
    return sha, decode.small_jpeg(im), decode.resize_for_model(im)


ExtractorFactory = Callable[[Weights, str, Union[int, None]], ResNet50Backbone]


class LocalEngine:
    """This process: decoding on worker threads ahead of one model, batches through its forward pass."""

    name = "local"

    def __init__(self, extractor_factory: ExtractorFactory | None = None, workers: int | None = None):
        self.extractor_factory = extractor_factory
        self.workers = workers
        self.extractor: ResNet50Backbone | None = None

    def start(self, settings: ExtractSettings) -> Started:
        started = time.perf_counter()
        import_keras()  # timed on its own: often the largest fixed cost of a small run
        imported = time.perf_counter()
        if self.extractor_factory is not None:
            self.extractor = self.extractor_factory(settings.weights, settings.pooling, settings.batch_size)
        else:
            self.extractor = ResNet50Backbone(settings.weights, settings.pooling, settings.batch_size,
                                              runtime=settings.runtime, precision=settings.precision)
        ex = self.extractor
        timings = {"import Keras/TensorFlow": imported - started,
                   **(getattr(ex, "timings", None) or {"model build": time.perf_counter() - imported})}
        return Started(ex.weights, ex.pooling, ex.device, ex.batch_size, getattr(ex, "runtime", ""),
                       getattr(ex, "precision", "float32"), timings, ex.dims, getattr(ex, "preset", None))

    def extract(self, work: list[ImageFile], known_sha256: dict[str, str]) -> Iterator[tuple[ImageFile, Outcome]]:
        if self.extractor is None:
            raise RuntimeError("LocalEngine.extract() before start()")
        side: dict[str, tuple[str, bytes]] = {}

        def load(f: ImageFile):
            got = decode_file(f, known_sha256.get(f.rel))
            if isinstance(got, Unchanged):
                return got
            sha, thumb, pixels = got
            side[f.rel] = (sha, thumb)
            return pixels

        workers = self.workers or getattr(self.extractor, "workers", 2)
        for f, outcome in extract_pipelined(self.extractor.embed, work, load, self.extractor.batch_size, workers):
            if isinstance(outcome, np.ndarray):
                sha, thumb = side.pop(f.rel)
                yield f, Embedded(sha, thumb, outcome)
            else:
                yield f, outcome

    def close(self) -> None:
        self.extractor = None


def make_engine(name: str, *, address: str | None = None, extractor_factory: ExtractorFactory | None = None,
                workers: int | None = None) -> Engine:
    """The engine called ``name`` (``local`` or ``ray``); ``address`` is the Ray cluster's, if any."""
    if name == "local":
        if address:
            raise ImgsimError("--ray-address needs --engine ray.")
        return LocalEngine(extractor_factory, workers)
    if name == "ray":
        from imgsim.engines.ray import RayEngine

        return RayEngine(address=address)
    raise ImgsimError(f"Unknown engine '{name}': use one of {', '.join(ENGINES)}.")
