"""Failures as values: the error base class and the typed reasons a file is skipped."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ImgsimError(Exception):
    """A failure whose message is written for a person: what happened and what to do next."""


class SkipReason(str, enum.Enum):
    """Why a file found in the folder is not in the index."""

    EMPTY = "empty file"
    NOT_IMAGE = "not an image"
    CORRUPT = "truncated or corrupt"
    TOO_LARGE = "too large"
    UNREADABLE = "unreadable"
    OUTSIDE = "symlink leads outside the folder"
    DANGLING = "dangling symlink"
    LOOP = "symlink loop"
    ALIAS = "symlink to something already indexed"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Skipped:
    """One file that could not be used, with a typed reason and a human detail."""

    path: str
    reason: SkipReason
    detail: str = ""
    size: int = -1
    mtime_ns: int = -1

    def to_json(self) -> dict:
        return {"path": self.path, "reason": self.reason.value, "detail": self.detail,
                "size": self.size, "mtime_ns": self.mtime_ns}

    @classmethod
    def from_json(cls, data: dict) -> "Skipped":
        return cls(path=data["path"], reason=SkipReason(data["reason"]), detail=data.get("detail", ""),
                   size=int(data.get("size", -1)), mtime_ns=int(data.get("mtime_ns", -1)))
