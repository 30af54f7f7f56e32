"""What a caller of the HTTP API or the MCP server may ask, and how a refusal reads.

Both servers answer from one index and its own collection only: paths are relative to the collection and must
name an indexed image; sizes are bounded (k, examples, text, bodies, pixels); a bearer token guards the HTTP API
when one is configured, and it does not listen beyond loopback without one. A refusal is an :class:`ApiError`:
an HTTP status and one line for a person, never a traceback or a server path.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from imgsim.analysis.duplicates import MAX_PAIRS
from imgsim.errors import ImgsimError
from imgsim.serving.policy import is_loopback, redact

#: The dashboard's upload cap (``.streamlit/config.toml`` ``maxUploadSize = 25``), for whole request bodies.
MAX_BODY_BYTES = 25 * 1024 * 1024
#: Longest one-line message a refusal carries.
MAX_MESSAGE = 500
#: clip-retrieval's ``deduplicate`` drops results whose cosine with a better one exceeds 0.94; as a distance
#: between unit vectors (d = sqrt(2 - 2 cos)) that is 0.3464.
CLIP_RETRIEVAL_DEDUP = round(math.sqrt(2 - 2 * 0.94), 4)


@dataclass(frozen=True)
class Limits:
    """The bounds of one server, the same for the HTTP API and the MCP server: every request outside them is
    refused with a 4xx and a message, and one that would wait too long for a busy model with a 503."""

    max_k: int = 1000
    #: Positive and negative examples of one search, in all.
    max_examples: int = 32
    max_text_chars: int = 2000
    max_body_bytes: int = MAX_BODY_BYTES
    max_clusters: int = 100
    max_central: int = 50
    thumbnail_min: int = 16
    thumbnail_max: int = 1024
    thumbnail_default: int = 256
    #: Largest duplicates threshold: the dashboard's slider ends there; beyond it nearly every pair is linked.
    max_threshold: float = 1.0
    #: Linked pairs a duplicates scan collects before it stops and says that its groups are incomplete.
    max_pairs: int = MAX_PAIRS
    #: Candidates a deduplicated search looks through (4k, at most this), and so checks against each other.
    max_dedup_depth: int = 1000
    #: How long a request waits for the model, or for another whole-collection computation, before a 503.
    busy_wait_s: float = 5.0
    #: The ``Retry-After`` of that 503, in seconds.
    retry_after_s: int = 5
    #: Groups and member paths an MCP answer lists at most (its size arguments' ceilings).
    max_listed_groups: int = 1000
    max_listed_paths: int = 10_000

    def to_json(self) -> dict:
        return {"max_k": self.max_k, "max_examples": self.max_examples, "max_text_chars": self.max_text_chars,
                "max_body_bytes": self.max_body_bytes, "max_clusters": self.max_clusters,
                "max_central": self.max_central, "thumbnail_sizes": [self.thumbnail_min, self.thumbnail_max],
                "max_threshold": self.max_threshold, "max_pairs": self.max_pairs,
                "max_dedup_depth": self.max_dedup_depth}


class ApiError(ImgsimError):
    """A request refused: the HTTP status to answer with, one line saying what to send instead, and for a busy
    server (503) the seconds after which to try again."""

    def __init__(self, status: int, message: str, retry_after: int | None = None):
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def one_line(message: str, redactions: Mapping[str | os.PathLike, str] = {}) -> str:
    """A message as a caller may read it: server paths replaced by names, one line, at most MAX_MESSAGE chars."""
    text = " ".join(redact(str(message), redactions).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"


def quoted(text: str, limit: int = 80) -> str:
    """Untrusted text echoed in a message: printable, short, quoted."""
    text = re.sub(r"[\x00-\x1f\x7f]", "?", str(text))
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def check_range(name: str, value: float, low: float, high: float) -> float:
    """``value`` if ``low <= value <= high`` (and a number), else a 400 that names the range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low:g} and {high:g} (got {quoted(value)}).")
    return value


def check_k(k: int, limits: Limits) -> int:
    """A result count in 1..max_k (the collection size clamps it further, as the CLI does)."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise ApiError(400, f"k must be a whole number between 1 and {limits.max_k} (got {quoted(k)}).")
    return int(check_range("k", k, 1, limits.max_k))


def check_distance(name: str, value: float | None) -> float | None:
    """A distance between unit vectors: 0..2."""
    return None if value is None else float(check_range(name, value, 0, 2))


def relative_path(text: object) -> str:
    """A collection path as sent by a caller, checked for shape: relative, no ``..``, no control characters."""
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "Give the image's path relative to the collection, e.g. 'beach/001.jpg'.")
    if len(text) > 4096 or re.search(r"[\x00-\x1f\x7f]", text):
        raise ApiError(400, "That path is not a valid collection path.")
    if text.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:[/\\]", text):
        raise ApiError(400, f"Paths are relative to the collection: {quoted(text)} is absolute. "
                            "Send it as it appears in results, e.g. 'beach/001.jpg'.")
    if ".." in re.split(r"[/\\]", text):
        raise ApiError(400, f"Paths may not leave the collection: {quoted(text)} contains '..'.")
    return "/".join(p for p in text.split("/") if p not in ("", "."))


def inside(root: Path, path: Path) -> Path | None:
    """``path`` with every symlink resolved, if that stays inside ``root`` (also resolved); else None."""
    real = Path(os.path.realpath(path))
    real_root = Path(os.path.realpath(root))
    return real if real == real_root or real_root in real.parents else None


def check_vector_length(values: object, dims: int) -> None:
    """A query vector's length, checked before its values are read: a 400 that names both lengths."""
    if isinstance(values, (list, tuple)) and values and len(values) != dims:
        raise ApiError(400, f"vector has {len(values)} values; this index's vectors have {dims}.")


def check_examples(count: int, limits: Limits) -> None:
    """Positive and negative examples, in all: at most ``max_examples``."""
    if count > limits.max_examples:
        raise ApiError(400, f"At most {limits.max_examples} positive and negative images in all.")


def unit_vector(values: Sequence[float], dims: int) -> np.ndarray:
    """A query vector of this index's length, finite and not zero, scaled to unit length as the index's are."""
    if not isinstance(values, (list, tuple)) or not values:
        raise ApiError(400, f"vector must be a list of {dims} numbers.")
    check_vector_length(values, dims)
    try:
        vector = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ApiError(400, f"vector must be a list of {dims} numbers.") from None
    if vector.ndim != 1 or not np.all(np.isfinite(vector)):
        raise ApiError(400, f"vector must be a list of {dims} finite numbers.")
    norm = float(np.linalg.norm(vector))
    if norm == 0:
        raise ApiError(400, "vector is all zeros: it has no direction to search in.")
    return (vector / norm).astype(np.float32)


def base64_image(text: object, max_bytes: int) -> bytes:
    """The bytes of a base64 image (a ``data:image/...;base64,`` prefix allowed), refused above ``max_bytes``."""
    if not isinstance(text, str) or not text:
        raise ApiError(400, "image must be the image file's bytes in base64.")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) > (max_bytes + 2) // 3 * 4 + 4:
        raise ApiError(413, f"The image is larger than {max_bytes // 2**20} MiB.")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "image is not valid base64.") from None


# --- who may ask -------------------------------------------------------------------------------------------

def read_token(path: str | os.PathLike) -> str:
    """The bearer token in a file (surrounding whitespace ignored); a missing or empty file is an error."""
    try:
        token = Path(path).expanduser().read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImgsimError(f"Cannot read the token file {path}: {getattr(exc, 'strerror', None) or exc}.") from None
    if not token or any(c.isspace() for c in token):
        raise ImgsimError(f"The token file {path} must hold one token (a line without spaces), e.g. "
                          "python -c 'import secrets; print(secrets.token_urlsafe(32))' > token.txt")
    return token


def token_matches(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries this bearer token (compared in constant time)."""
    scheme, _, value = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())


def check_listen(host: str, has_token: bool, insecure_no_token: bool) -> None:
    """Refuse to listen beyond loopback without a token, unless the operator said so explicitly."""
    if not is_loopback(host) and not has_token and not insecure_no_token:
        raise ImgsimError(f"Refusing to listen on {host} without a token: anyone who can reach this address could "
                          "query the collection and see its images. Pass --token-file FILE (clients then send "
                          "'Authorization: Bearer TOKEN'), listen on 127.0.0.1 behind your own proxy, or pass "
                          "--insecure-no-token if the network itself is trusted.")
