"""Which weights a backbone uses, as asked (``--weights``) and as loaded (with the identity an index records),
and the download helpers every backbone shares: a socket timeout, the root cause of a failure, a file's hash."""

from __future__ import annotations

import contextlib
import hashlib
import socket
import sys
import urllib.error
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from imgsim.errors import ImgsimError

DEFAULT_SEED = 0


class WeightsError(ImgsimError):
    """The requested weights cannot be used; the message says how to supply them."""


@dataclass(frozen=True)
class Weights:
    """Which weights a model uses: ``imagenet``, ``random`` (seeded) or a local ``file``."""

    mode: str
    seed: int | None = None
    path: str | None = None

    @classmethod
    def parse(cls, text: str | None, missing_file: Callable[[Path], str] | None = None) -> "Weights":
        """Parse ``imagenet``, ``random``, ``random:SEED`` or a file path; anything else says what to write.

        ``missing_file`` gives the message for a path that is not a file (a backbone's own instructions).
        """
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
            raise WeightsError(missing_file(path) if missing_file else f"Weights file not found: {path}.")
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


def random_weights(seed: int, label: str) -> ResolvedWeights:
    """Seeded random weights: the seed is their identity."""
    return ResolvedWeights("random", f"random:{seed}", label, None, seed)


def sha256_file(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in 1 MiB blocks (weight files are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@contextlib.contextmanager
def downloading(seconds: float) -> Iterator[None]:
    """Run a Keras or keras-hub download with a per-socket timeout, its progress output sent to stderr.

    Their downloaders have no timeout of their own: this makes an offline machine fail fast without
    cutting short a slow but working download. stdout stays clean for ``--json``.
    """
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        socket.setdefaulttimeout(previous)


def download_failure(exc: BaseException) -> str:
    """The root cause of a failed download ("[Errno -2] Name or service not known"), not its wrapper."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, urllib.error.HTTPError):
            return str(seen)  # "HTTP Error 403: Forbidden"
        if isinstance(seen, urllib.error.URLError):
            return str(seen.reason)
        seen = seen.__cause__ or seen.__context__
    return str(exc)
