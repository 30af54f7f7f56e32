"""Folder discovery: walk a folder safely and list the image files in it."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from imgsim.errors import ImgsimError, SkipReason, Skipped

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


def _utf8(name: str) -> bool:
    """Whether a name from the file system is valid UTF-8 (undecodable bytes arrive as lone surrogates)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _printable(name: str) -> str:
    """A name with its undecodable bytes shown as U+FFFD, safe to store in JSON and show to people."""
    return os.fsencode(name).decode("utf-8", "replace")


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def discover(root: str | os.PathLike, exclude: tuple[str | os.PathLike, ...] = ()) -> Discovery:
    """Walk ``root`` recursively; list image files sorted by relative path.

    Symlinks are followed only while they stay inside ``root``, and only to reach something not already
    found under its own name, so loops end and no image is listed twice. Hidden entries (names starting
    with a dot) and the folders in ``exclude`` (for example an index kept inside the collection) are ignored.
    """
    root_path = Path(root).expanduser()
    if not root_path.is_dir():
        raise ImgsimError(f"Image folder not found: {root_path}. Check the path (it must be a folder).")
    real_root = os.path.realpath(root_path)
    if not _utf8(real_root):
        raise ImgsimError(f"The folder path {_printable(real_root)} is not valid UTF-8, which the index cannot "
                          "record. Rename the folder (or index it through a link with a UTF-8 name).")
    excluded = {os.path.realpath(Path(p).expanduser()) for p in exclude}
    found = Discovery(root=Path(real_root))
    visited_dirs: set[str] = set()
    seen_files: set[str] = set()
    links: list[tuple[str, str]] = []  # (rel, link path), resolved once every real entry is known

    def walk(real_dir: str, rel_dir: str) -> None:
        visited_dirs.add(real_dir)
        try:
            entries = sorted(os.scandir(real_dir), key=lambda e: e.name)
        except OSError as exc:
            found.skipped.append(Skipped(rel_dir or ".", SkipReason.UNREADABLE, exc.strerror or str(exc)))
            return
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.name.startswith("."):
                found.ignored += 1
            elif not _utf8(entry.name):
                # The index stores paths as UTF-8 text: such a name would fail the whole run when it is written.
                if is_image_name(entry.name) or entry.is_dir():
                    found.skipped.append(Skipped(_printable(rel), SkipReason.UNREADABLE,
                                                 "its name is not valid UTF-8; rename it to index it"))
                else:
                    found.ignored += 1
            elif entry.is_symlink():
                links.append((rel, entry.path))
            else:
                visit(entry.path, entry.name, rel)

    def visit(path: str, name: str, rel: str) -> None:
        try:
            st = os.stat(path)
        except OSError as exc:
            found.skipped.append(Skipped(rel, SkipReason.UNREADABLE, exc.strerror or str(exc)))
            return
        real = os.path.realpath(path)
        if stat.S_ISDIR(st.st_mode):
            if real not in excluded:
                walk(real, rel)
        elif stat.S_ISREG(st.st_mode) and is_image_name(name):
            seen_files.add(real)
            found.files.append(ImageFile(rel, Path(real), st.st_size, st.st_mtime_ns))
        else:
            found.ignored += 1

    walk(real_root, "")
    while links:
        rel, link = links.pop(0)
        target = os.path.realpath(link)
        name = rel.rsplit("/", 1)[-1]
        if not os.path.exists(target):
            found.skipped.append(Skipped(rel, SkipReason.DANGLING, f"points to {os.readlink(link)}"))
        elif not _inside(target, real_root):
            found.skipped.append(Skipped(rel, SkipReason.OUTSIDE, f"points to {target}"))
        elif os.path.isdir(target) and _inside(os.path.realpath(os.path.dirname(link)), target):
            found.skipped.append(Skipped(rel, SkipReason.LOOP, f"points to its own parent {target}"))
        elif target in visited_dirs or target in seen_files:
            found.skipped.append(Skipped(rel, SkipReason.ALIAS, f"same as {Path(target).relative_to(real_root)}"))
        elif os.path.isdir(target) or is_image_name(name):
            visit(target, name, rel)
        else:
            found.ignored += 1
    found.files.sort(key=lambda f: f.rel)
    found.skipped.sort(key=lambda s: s.path)
    return found
