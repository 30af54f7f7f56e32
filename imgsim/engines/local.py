"""The local engine: decoding on worker threads of this process, ahead of one model's forward pass."""

from __future__ import annotations

import time
from typing import Iterator

import numpy as np

from imgsim.discover import ImageFile
from imgsim.engines.base import Embedded, ExtractSettings, ModelFactory, Outcome, Started, Unchanged, decode_file
from imgsim.models.base import Backbone, make_backbone
from imgsim.models.embedding import extract_pipelined
from imgsim.models.native import import_keras


class LocalEngine:
    """This process: decoding on worker threads ahead of one model, batches through its forward pass."""

    name = "local"
    #: Runs here: it takes no cluster address (see :func:`imgsim.engines.make_engine`).
    cluster = False

    def __init__(self, model_factory: ModelFactory | None = None):
        """``model_factory`` replaces the model built for the settings' backbone."""
        self.model_factory = model_factory
        self.extractor: Backbone | None = None
        self.resample = ""

    def start(self, settings: ExtractSettings) -> Started:
        started = time.perf_counter()
        import_keras()  # timed on its own: often the largest fixed cost of a small run
        imported = time.perf_counter()
        self.extractor = ex = self._model(settings)
        self.resample = settings.resample
        timings = {"import Keras/TensorFlow": imported - started,
                   **(getattr(ex, "timings", None) or {"model build": time.perf_counter() - imported})}
        return Started(ex.weights, ex.pooling, ex.device, ex.batch_size, getattr(ex, "runtime", ""),
                       getattr(ex, "precision", "float32"), timings, ex.dims, getattr(ex, "preset", None))

    def _model(self, s: ExtractSettings) -> Backbone:
        if self.model_factory is not None:
            return self.model_factory(s.weights, s.pooling, s.batch_size)
        # batch_size None: the backbone picks one for its device; runtime and precision reach those that have them.
        return make_backbone(s.backbone, s.weights, s.pooling, s.batch_size, runtime=s.runtime, precision=s.precision)

    def extract(self, work: list[ImageFile], known_sha256: dict[str, str]) -> Iterator[tuple[ImageFile, Outcome]]:
        if self.extractor is None:
            raise RuntimeError("LocalEngine.extract() before start()")
        side: dict[str, tuple[str, bytes]] = {}

        def load(f: ImageFile):
            got = decode_file(f, known_sha256.get(f.rel), self.resample)
            if isinstance(got, Unchanged):
                return got
            sha, thumb, pixels = got
            side[f.rel] = (sha, thumb)
            return pixels

        workers = getattr(self.extractor, "workers", 2)  # decode threads chosen for the model's device
        for f, outcome in extract_pipelined(self.extractor.embed, work, load, self.extractor.batch_size, workers):
            if isinstance(outcome, np.ndarray):
                sha, thumb = side.pop(f.rel)
                yield f, Embedded(sha, thumb, outcome)
            else:
                yield f, outcome

    def close(self) -> None:
        self.extractor = None
