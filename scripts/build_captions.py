#!/usr/bin/env python3
"""Build the demo collection's metadata sidecar, ``data/demo/captions.csv``, from what its sources say.

Only text that the source packages really ship about each photo is used -- nothing is invented:

* Tux Paint stamps (``tuxpaint-stamps-default``): every stamp ``NAME.png`` comes with ``NAME.txt``, whose first
  line is the stamp's English description ("A great blue heron."); the stamp's folders in the package
  (``animals/birds``) become its tags.
* scikit-image photographs: the first line of the docstring of the loader in ``skimage/data/_fetchers.py``
  that reads the file ("Chelsea the cat.", "Launch photo of DSCOVR on Falcon 9 by SpaceX.").
* opencv-doc samples ship no description: their caption and tags stay empty (the file name, chosen when the
  demo was built, is all that is known).

The photos and their origins are read from ``data/demo/SOURCES.md`` (written by ``scripts/build_demo.py``).
Columns: ``path`` (relative to data/demo), ``caption``, ``tags`` (``; ``-separated), ``source`` (the package).
Deterministic: rows sorted by path, so two runs with the same packages give identical files.

    python scripts/build_captions.py [--demo data/demo] [--tuxpaint-root DIR] [--skimage-fetchers FILE]

Without the packages installed, point the options at unpacked copies, e.g.
``apt-get download tuxpaint-stamps-default && dpkg-deb -x tuxpaint-stamps-default_*.deb x`` then
``--tuxpaint-root x/usr/share/tuxpaint/stamps``; ``pip download --no-deps scikit-image==0.26.0``, unzip
``skimage/data/_fetchers.py`` and pass it as ``--skimage-fetchers``. Exit status 1 names what is missing.
"""

from __future__ import annotations

import argparse
import ast
import csv
import re
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path, PurePosixPath

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DEMO = REPO_ROOT / "data" / "demo"
TUXPAINT_ROOT = PurePosixPath("/usr/share/tuxpaint/stamps")
TUXPAINT_PKG, OPENCV_PKG, SKIMAGE_PKG = "tuxpaint-stamps-default", "opencv-doc", "scikit-image"
SKIMAGE_PREFIX = "site-packages/skimage/"
OUTPUT = "captions.csv"
COLUMNS = ("path", "caption", "tags", "source")
# One row of the Files table of SOURCES.md: | `out` | package (version) | `original` | licence |
_ROW = re.compile(r"\| `(?P<out>[^`]+)` \| (?P<pkg>[\w.+-]+) \((?P<version>[^)]*)\) \| `(?P<orig>[^`]+)` \|")


class Missing(RuntimeError):
    """A source the captions come from is not available."""


@dataclass(frozen=True)
class Photo:
    """One demo photo and where it came from, as SOURCES.md records it."""

    path: str
    package: str
    version: str
    original: str


def read_sources(demo: Path) -> list[Photo]:
    """Every row of the Files table of SOURCES.md."""
    text = (demo / "SOURCES.md").read_text(encoding="utf-8")
    return [Photo(m["out"], m["pkg"], m["version"], m["orig"]) for m in map(_ROW.match, text.splitlines()) if m]


def tuxpaint_row(photo: Photo, root: Path) -> tuple[str, str]:
    """(caption, tags) of a stamp: the first line of its description file, and its folders."""
    rel = PurePosixPath(photo.original).relative_to(TUXPAINT_ROOT)
    description = root / rel.with_suffix(".txt")
    if not description.is_file():
        raise Missing(f"{description} not found: is {TUXPAINT_PKG} {photo.version} at {root}? "
                      f"(apt-get install {TUXPAINT_PKG}, or --tuxpaint-root)")
    first = description.read_text(encoding="utf-8").splitlines()[0].strip()
    if not first or "=" in first:  # the English text precedes the "lang.utf8=..." translations
        raise Missing(f"{description} does not start with an English description")
    return first, "; ".join(rel.parent.parts)


def skimage_captions(fetchers: Path) -> dict[str, str]:
    """Data file (``data/chelsea.png``) -> first docstring line of the loader function that reads it."""
    tree = ast.parse(fetchers.read_text(encoding="utf-8"))
    out = {}
    for fn in tree.body:
        doc = ast.get_docstring(fn) if isinstance(fn, ast.FunctionDef) else None
        if not doc:
            continue
        for node in ast.walk(fn):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_load" and node.args
                    and isinstance(node.args[0], ast.Constant)):
                out[node.args[0].value] = doc.splitlines()[0].strip()
    return out


def installed_fetchers(version: str) -> Path:
    """``skimage/data/_fetchers.py`` of the installed scikit-image of that version (not imported)."""
    try:
        dist = metadata.distribution(SKIMAGE_PKG)
    except metadata.PackageNotFoundError:
        raise Missing(f"{SKIMAGE_PKG} is not installed (pip install {SKIMAGE_PKG}=={version}, or --skimage-fetchers)") from None
    if dist.version != version:
        raise Missing(f"{SKIMAGE_PKG} {dist.version} is installed; SOURCES.md names {version} (or --skimage-fetchers)")
    return Path(dist.locate_file("skimage/data/_fetchers.py"))


def build_rows(photos: list[Photo], tuxpaint_root: Path, fetchers: Path | None) -> list[dict[str, str]]:
    """One row per photo, sorted by path."""
    sk_captions: dict[str, str] | None = None
    rows = []
    for photo in sorted(photos, key=lambda p: p.path):
        caption, tags = "", ""
        if photo.package == TUXPAINT_PKG:
            caption, tags = tuxpaint_row(photo, tuxpaint_root)
        elif photo.package == SKIMAGE_PKG:
            if sk_captions is None:
                sk_captions = skimage_captions(fetchers or installed_fetchers(photo.version))
            key = photo.original.removeprefix(SKIMAGE_PREFIX)
            if key not in sk_captions:
                raise Missing(f"no loader in scikit-image's _fetchers.py reads {key}")
            caption = sk_captions[key]
        elif photo.package != OPENCV_PKG:
            raise Missing(f"SOURCES.md names an unknown package {photo.package!r} for {photo.path}")
        rows.append({"path": photo.path, "caption": caption, "tags": tags, "source": photo.package})
    return rows


def main(argv: list[str] | None = None) -> int:
    """Write data/demo/captions.csv; 1 with a message when a source is missing or SOURCES.md disagrees."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=DEFAULT_DEMO)
    parser.add_argument("--tuxpaint-root", type=Path, default=Path(TUXPAINT_ROOT))
    parser.add_argument("--skimage-fetchers", type=Path, default=None)
    args = parser.parse_args(argv)
    photos = read_sources(args.demo)
    on_disk = sorted(p.relative_to(args.demo).as_posix() for p in args.demo.glob("*/*.jpg"))
    if sorted(p.path for p in photos) != on_disk:
        print(f"SOURCES.md lists {len(photos)} photos but {args.demo} holds {len(on_disk)}: rerun "
              f"scripts/build_demo.py first.", file=sys.stderr)
        return 1
    try:
        rows = build_rows(photos, args.tuxpaint_root, args.skimage_fetchers)
    except Missing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with open(args.demo / OUTPUT, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    described = sum(1 for r in rows if r["caption"])
    print(f"wrote {args.demo / OUTPUT}: {len(rows)} photos, {described} with a caption from their source")
    return 0


if __name__ == "__main__":
    sys.exit(main())
