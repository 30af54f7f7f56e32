"""Folder discovery: walk a folder safely and list the image files in it."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from .errors import ImgsimError, SkipReason, Skipped

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class ImageFile:
    """An image file found in the folder: its path relative to the root and its stat."""

    rel: str
    path: Path
    size: int
    mtime_ns: int


@dataclass
class Discovery:
    """What a walk found: usable image files, skipped entries, and how many other files it ignored."""

    root: Path
    files: list[ImageFile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    ignored: int = 0


def is_image_name(name: str) -> bool:
    """True when the file name carries one of the accepted image extensions (any letter case)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def discover(root: str | os.PathLike, exclude: tuple[str | os.PathLike, ...] = ()) -> Discovery:
    """Walk ``root`` recursively, following symlinks only while they stay inside it.

    Hidden entries (names starting with a dot) and the folders in ``exclude`` (for example an index
    kept inside the collection) are ignored. Files are returned sorted by relative path.
    """
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise ImgsimError(f"Image folder not found: {root_path}. Check the path (it must be a folder).")
    real_root = os.path.realpath(root_path)
    excluded = {os.path.realpath(Path(p).expanduser()) for p in exclude}
    found = Discovery(root=Path(real_root))
    visited: set[tuple[int, int]] = set()

    def walk(real_dir: str, rel_dir: str) -> None:
        st = os.stat(real_dir)
        key = (st.st_dev, st.st_ino)
        if key in visited:
            found.skipped.append(Skipped(rel_dir or ".", SkipReason.LOOP, "folder already visited"))
            return
        visited.add(key)
        try:
            entries = sorted(os.scandir(real_dir), key=lambda e: e.name)
        except OSError as exc:
            found.skipped.append(Skipped(rel_dir or ".", SkipReason.UNREADABLE, exc.strerror or str(exc)))
            return
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.name.startswith("."):
                found.ignored += 1
                continue
            _visit(entry, rel)

    def _visit(entry: os.DirEntry, rel: str) -> None:
        target = entry.path
        if entry.is_symlink():
            target = os.path.realpath(entry.path)
            if not os.path.exists(target):
                if is_image_name(entry.name):
                    found.skipped.append(Skipped(rel, SkipReason.DANGLING, f"points to {os.readlink(entry.path)}"))
                else:
                    found.ignored += 1
                return
            if not _inside(target, real_root):
                found.skipped.append(Skipped(rel, SkipReason.OUTSIDE, f"points to {target}"))
                return
        try:
            st = os.stat(target)
        except OSError as exc:
            found.skipped.append(Skipped(rel, SkipReason.UNREADABLE, exc.strerror or str(exc)))
            return
        if stat.S_ISDIR(st.st_mode):
            if os.path.realpath(target) in excluded:
                return
            walk(os.path.realpath(target), rel)
        elif stat.S_ISREG(st.st_mode) and is_image_name(entry.name):
            found.files.append(ImageFile(rel, Path(target), st.st_size, st.st_mtime_ns))
        else:
            found.ignored += 1

    walk(real_root, "")
    found.files.sort(key=lambda f: f.rel)
    return found
