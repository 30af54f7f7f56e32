#!/usr/bin/env python3
"""Rebuild the embedded demo collection of real photographs (``data/demo``).

The collection is assembled only from images shipped by three installed packages:

* Debian ``tuxpaint-stamps-default`` -- photographic stamps under
  ``/usr/share/tuxpaint/stamps`` (GPL-2).  Many stamps are drawings; only the
  photographs are used, chosen by the explicit rules below (:data:`TUXPAINT_RULES`,
  :data:`TUXPAINT_EXCLUDE`), which were curated by looking at every candidate.
* Debian ``opencv-doc`` -- a few natural photographs from
  ``/usr/share/doc/opencv-doc/examples/data`` (Apache-2.0 AND BSD-3-Clause),
  listed one by one in :data:`OPENCV_FILES`.
* PyPI ``scikit-image`` -- photographs bundled inside the wheel
  (``skimage/data``), listed one by one with their per-image licence in
  :data:`SKIMAGE_FILES`.  Files are read straight from the installed wheel; nothing
  is downloaded and ``skimage`` is not even imported.

Processing of every selected image (all deterministic):

1. palette / grey / alpha images are converted to RGBA; for images with an alpha
   channel the canvas is cropped to the bounding box of the visible pixels
   (alpha > :data:`ALPHA_THRESHOLD`) and then composited onto **white**;
2. EXIF orientation is applied (``ImageOps.exif_transpose``);
3. images whose longest side exceeds :data:`MAX_SIDE` are downscaled with Lanczos
   (never upscaled);
4. the result is saved as baseline RGB JPEG (quality :data:`JPEG_QUALITY`,
   ``optimize=True``, no EXIF/ICC metadata).

Traversal is sorted and there is no randomness, so running the script twice with the
same package versions gives byte-identical output.  Byte-identical duplicate sources
are used once (the first in sorted order).

Output layout (``--out``, default ``data/demo`` relative to the repository root)::

    <out>/<category>/<name>.jpg   the photographs
    <out>/SOURCES.md              provenance of every file (package, version, path, licence)
    <out>/LICENSES/               licence texts / copyright files the sources require

Before writing, previously generated files are removed (``<out>/*/*.jpg``,
``<out>/SOURCES.md``, ``<out>/LICENSES/*``); nothing else in ``--out`` is touched.

Usage::

    python scripts/build_demo.py [--out data/demo]

Exit status is 1 with a message naming the missing apt/pip package when a source is
not installed.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import re
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Iterable

from PIL import Image, ImageOps

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "data" / "demo"

MAX_SIDE = 320
"""Longest side of an output image, in pixels (larger images are downscaled)."""
MIN_SIDE = 40
"""Sources whose longest side is below this are skipped (too small to be useful)."""
JPEG_QUALITY = 85
ALPHA_THRESHOLD = 16
"""Pixels with alpha <= this are ignored when cropping a transparent canvas."""

# --------------------------------------------------------------------------- sources

TUXPAINT_PKG = "tuxpaint-stamps-default"
TUXPAINT_ROOT = Path("/usr/share/tuxpaint/stamps")
TUXPAINT_LICENSE = "GPL-2"

OPENCV_PKG = "opencv-doc"
OPENCV_ROOT = Path("/usr/share/doc/opencv-doc/examples/data")
OPENCV_LICENSE = "Apache-2.0 AND BSD-3-Clause"

SKIMAGE_DIST = "scikit-image"
SKIMAGE_PIP_SPEC = "scikit-image>=0.24,<0.27"

# Tux Paint stamps: ordered rules ``(path prefix, category, output-name prefix)``.
# Paths are relative to TUXPAINT_ROOT; the FIRST matching prefix wins, so specific
# files come before their folder.  Stamps matching no rule are not used (cartoons,
# alphabets, flags, clothes drawings, holiday clip-art, ...).  In addition, any path
# with a ``cartoon`` component and every ``*_mirror`` stamp (a flipped copy) is skipped.
TUXPAINT_RULES: tuple[tuple[str, str, str], ...] = (
    ("animals/birds/", "birds", ""),
    ("animals/fish/lobster.png", "invertebrates", ""),
    ("animals/fish/shrimp.png", "invertebrates", ""),
    ("animals/fish/", "fish", ""),
    ("animals/insects/", "invertebrates", ""),
    ("animals/shellfish/", "invertebrates", ""),
    ("animals/amphibians/", "misc", ""),
    ("animals/mammals/bears/toys/", "household", ""),
    ("animals/mammals/", "mammals", ""),
    ("animals/marsupials/", "mammals", ""),
    ("clothes/clothespin_", "household", ""),
    ("food/fruit/", "fruit", ""),
    ("food/nuts/", "food", ""),
    ("food/spices/", "vegetables", ""),
    ("food/vegetables/", "vegetables", ""),
    ("hobbies/music/", "instruments", ""),
    ("hobbies/binoculars.png", "household", ""),
    ("hobbies/camera_35mm.png", "household", ""),
    ("household/tools/", "tools", ""),
    ("household/arttools/scissors_", "tools", ""),
    ("household/", "household", ""),
    ("medical/", "household", ""),
    ("military/vehicles/", "vehicles", ""),
    ("military/", "misc", ""),
    ("naturalforces/", "misc", ""),
    ("people/fireman", "misc", ""),
    ("people/toys/", "household", ""),
    ("plants/flowers/", "flowers", ""),
    ("plants/trees/rambutan.png", "fruit", ""),
    ("plants/", "plants", ""),
    ("seasonal/candle.png", "household", ""),
    ("seasonal/christmas/Candy_cane_photo_", "food", ""),
    ("seasonal/christmas/Christmas_pudding.png", "food", ""),
    ("seasonal/christmas/Mince_Pie.png", "food", ""),
    ("seasonal/christmas/Roast_turkey.png", "food", ""),
    ("seasonal/christmas/Christmas_Tree_photo.png", "plants", ""),
    ("seasonal/christmas/xmaswreath.png", "plants", ""),
    ("seasonal/christmas/German_Christmas_toy.png", "household", ""),
    ("seasonal/halloween/grave-", "gravestones", ""),
    ("space/", "space", ""),
    ("sports/", "sports", ""),
    ("symbols/money/canadian/coins/", "coins", "cad_"),
    ("symbols/money/euro/coins/", "coins", "eur_"),
    ("symbols/money/japanese/", "coins", ""),
    ("symbols/money/us/coins/", "coins", "usd_"),
    ("town/roadsigns/", "street", ""),
    ("town/uk_post_box.png", "street", ""),
    ("town/usps_mailbox.png", "street", ""),
    ("town/monuments/inukshuk-photo.png", "scenes", ""),
    ("vehicles/", "vehicles", ""),
)

# Stamps inside the folders above that are drawings, paintings or renders (checked
# visually on contact sheets), or otherwise unsuitable.  Path -> reason.
TUXPAINT_EXCLUDE: dict[str, str] = {
    "animals/birds/adelaide-rosella.png": "painted illustration",
    "animals/birds/quetzal.png": "painted illustration",
    "animals/birds/tucan.png": "painted illustration",
    "animals/insects/bee.png": "line drawing",
    "animals/insects/fly.png": "line drawing",
    "animals/insects/hornet.png": "painted illustration",
    "animals/mammals/echidna.png": "silhouette",
    "animals/mammals/hedgehog.png": "cartoon",
    "animals/mammals/rhino_black.png": "looks rendered",
    "animals/mammals/aquatic/whale.png": "painted illustration",
    "animals/mammals/camel/dromedary.png": "painted illustration",
    "animals/mammals/dogs/dog.png": "painted illustration",
    "animals/mammals/rodents/beaver.png": "painted illustration",
    "animals/mammals/rodents/mouse.png": "painted illustration",
    "household/arttools/highlighter.png": "drawing",
    "household/dishes/glass.png": "render, almost fully transparent",
    "household/dishes/mug.png": "render",
    "medical/tooth.png": "line drawing",
    "naturalforces/lightningbolt.png": "flat drawing",
    "plants/trees/birch.png": "posterised grey silhouette",
    "space/planets/0_sun.png": "render",
    "space/planets/6_saturn.png": "render",
    "space/planets/9_pluto.png": "artist impression",
    "sports/rugby_goal_posts.png": "thin lines only",
    "town/roadsigns/arrow.png": "flat drawing",
    "town/roadsigns/crossroads.png": "flat drawing",
    "town/roadsigns/hospital.png": "flat drawing",
    "town/roadsigns/roundabout.png": "flat drawing",
    "town/roadsigns/stop.png": "flat drawing",
    "town/roadsigns/stoplight_01_red.png": "flat drawing",
    "town/roadsigns/stoplight_02_yellow.png": "flat drawing",
    "town/roadsigns/stoplight_03_green.png": "flat drawing",
    "town/roadsigns/t-junction.png": "flat drawing",
    "town/roadsigns/yield.png": "flat drawing",
    "vehicles/7spoke256.png": "drawing",
    "vehicles/emergency/sedan_police.png": "drawing fragment",
    "vehicles/ship/chineseJunk.png": "painted illustration",
}

# opencv-doc sample photographs: file name -> (category, output name).
# Only natural photographs; near-duplicate stereo/sequence partners (aero3, aloeR,
# leuvenB, graf3), test patterns, text, logos, paintings (starry_night), renders,
# photos of identifiable people (messi5, basketball*) and the classic "baboon"
# (mandrill) test image, whose original copyright status is unknown, are left out.
OPENCV_FILES: dict[str, tuple[str, str]] = {
    "aero1.jpg": ("scenes", "aerial_town"),
    "aloeL.jpg": ("plants", "aloe_pot"),
    "apple.jpg": ("fruit", "apple_closeup"),
    "building.jpg": ("scenes", "building"),
    "butterfly.jpg": ("invertebrates", "swallowtail_butterfly"),
    "chicky_512.png": ("mammals", "small_dog"),
    "fruits.jpg": ("fruit", "fruit_mix"),
    "graf1.png": ("scenes", "graffiti_wall"),
    "home.jpg": ("scenes", "palace"),
    "leuvenA.jpg": ("scenes", "leuven_street"),
    "orange.jpg": ("fruit", "orange_closeup"),
    "squirrel_cls.jpg": ("mammals", "squirrel_branch"),
}

# scikit-image photographs bundled in the wheel (no download):
# path inside site-packages -> (category, output name, licence).  Licences are quoted
# from the docstrings of the loader functions in skimage/data/_fetchers.py.
SKIMAGE_FILES: dict[str, tuple[str, str, str]] = {
    "skimage/data/astronaut.png": (
        "misc", "astronaut",
        "Public domain (NASA; 'No known copyright restrictions, released into the public domain')",
    ),
    "skimage/data/brick.png": ("scenes", "brick_wall", "CC0-1.0 (CC0Textures)"),
    "skimage/data/camera.png": ("misc", "cameraman", "CC0-1.0 (photographer Lav Varshney)"),
    "skimage/data/chelsea.png": ("mammals", "chelsea_cat", "CC0-1.0 (photographer Stefan van der Walt)"),
    "skimage/data/coffee.png": ("food", "coffee_cup", "CC0-1.0 (photographer Rachel Michetti)"),
    "skimage/data/coins.png": (
        "coins", "greek_coins", "No known copyright restrictions (Brooklyn Museum Collection)",
    ),
    "skimage/data/grass.png": ("scenes", "grass", "CC0-1.0 (linolafett, DeviantArt)"),
    "skimage/data/gravel.png": ("scenes", "gravel", "CC0-1.0 (CC0Textures)"),
    "skimage/data/hubble_deep_field.jpg": (
        "space", "hubble_deep_field", "Public domain (NASA, HubbleSite)",
    ),
    "skimage/data/rocket.jpg": ("space", "falcon9_rocket", "Public domain (SpaceX)"),
}

# Licence texts copied to <out>/LICENSES: destination name -> source.
# Entries with a None source are produced from the scikit-image distribution.
LICENSE_FILES: dict[str, Path | None] = {
    "GPL-2.txt": Path("/usr/share/common-licenses/GPL-2"),
    "Apache-2.0.txt": Path("/usr/share/common-licenses/Apache-2.0"),
    "CC0-1.0.txt": Path("/usr/share/common-licenses/CC0-1.0"),
    "tuxpaint-stamps-default.copyright": Path("/usr/share/doc/tuxpaint-stamps-default/copyright"),
    "opencv-doc.copyright": Path("/usr/share/doc/opencv-doc/copyright"),
    "scikit-image.LICENSE.txt": None,
}


class MissingSource(RuntimeError):
    """A source package (or one of its expected files) is not installed."""


@dataclass(frozen=True)
class Item:
    """One selected source image and where it goes."""

    category: str
    name: str
    source: Path
    package: str
    version: str
    origin: str
    license: str

    @property
    def out_rel(self) -> str:
        return f"{self.category}/{self.name}.jpg"


# --------------------------------------------------------------------------- helpers


def debian_version(package: str) -> str:
    """Installed version of a Debian package, or raise :class:`MissingSource`."""
    try:
        res = subprocess.run(
            ["dpkg-query", "-W", "-f=${db:Status-Abbrev}|${Version}", package],
            capture_output=True, text=True, check=False,
        )
    except FileNotFoundError as exc:  # not a Debian system
        raise MissingSource(f"cannot query dpkg for Debian package '{package}'") from exc
    status, _, version = res.stdout.partition("|")
    if res.returncode != 0 or not status.startswith("ii") or not version:
        raise MissingSource(
            f"Debian package '{package}' is not installed (sudo apt-get install {package})"
        )
    return version.strip()


def slug(text: str) -> str:
    """ASCII lowercase file-name stem: runs of other characters become '_'."""
    s = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    if not s:
        raise ValueError(f"empty name from {text!r}")
    return s


def tuxpaint_rule(rel: str) -> tuple[str, str, str] | None:
    """First rule whose prefix matches ``rel`` (a path relative to TUXPAINT_ROOT)."""
    for rule in TUXPAINT_RULES:
        if rel.startswith(rule[0]):
            return rule
    return None


def require_package_dir(root: Path, package: str) -> None:
    """Fail with the apt command to run when a source package's folder is missing."""
    if not root.is_dir():
        raise MissingSource(f"Debian package '{package}' is not installed ({root} missing; "
                            f"sudo apt-get install {package})")


def iter_tuxpaint_stamps(root: Path) -> Iterable[str]:
    """Relative paths of all PNG/JPEG stamps, in sorted order."""
    for p in sorted(root.rglob("*")):
        if p.is_file() and p.suffix.lower() in {".png", ".jpg", ".jpeg"}:
            yield p.relative_to(root).as_posix()


def collect_tuxpaint() -> list[Item]:
    """Select the photographic Tux Paint stamps according to the explicit rules."""
    require_package_dir(TUXPAINT_ROOT, TUXPAINT_PKG)
    version = debian_version(TUXPAINT_PKG)
    items: list[Item] = []
    used_rules: set[str] = set()
    seen_excludes: set[str] = set()
    for rel in iter_tuxpaint_stamps(TUXPAINT_ROOT):
        parts = rel.split("/")
        if "cartoon" in parts or Path(rel).stem.endswith("_mirror"):
            continue
        rule = tuxpaint_rule(rel)
        if rule is None:
            continue
        used_rules.add(rule[0])
        if rel in TUXPAINT_EXCLUDE:
            seen_excludes.add(rel)
            continue
        prefix, category, name_prefix = rule
        items.append(Item(
            category=category,
            name=slug(name_prefix + Path(rel).stem),
            source=TUXPAINT_ROOT / rel,
            package=TUXPAINT_PKG,
            version=version,
            origin=(TUXPAINT_ROOT / rel).as_posix(),
            license=TUXPAINT_LICENSE,
        ))
    for prefix in (r[0] for r in TUXPAINT_RULES):
        if prefix not in used_rules:
            warn(f"tuxpaint rule '{prefix}' matched no stamp (package contents changed?)")
    for rel in sorted(set(TUXPAINT_EXCLUDE) - seen_excludes):
        warn(f"tuxpaint exclude '{rel}' matched no stamp (package contents changed?)")
    return items


def opencv_source(name: str) -> Path:
    """Path of an opencv-doc sample, accepting a gzip-compressed copy."""
    for cand in (OPENCV_ROOT / name, OPENCV_ROOT / (name + ".gz")):
        if cand.is_file():
            return cand
    raise MissingSource(
        f"'{OPENCV_ROOT / name}' not found: Debian package '{OPENCV_PKG}' is not installed "
        f"or has changed (sudo apt-get install {OPENCV_PKG})"
    )


def collect_opencv() -> list[Item]:
    """The explicitly listed natural photographs from opencv-doc."""
    require_package_dir(OPENCV_ROOT, OPENCV_PKG)
    version = debian_version(OPENCV_PKG)
    items = []
    for fname, (category, name) in sorted(OPENCV_FILES.items()):
        src = opencv_source(fname)
        items.append(Item(category, name, src, OPENCV_PKG, version, src.as_posix(), OPENCV_LICENSE))
    return items


def skimage_dist() -> metadata.Distribution:
    """The installed scikit-image distribution, or raise :class:`MissingSource`."""
    try:
        return metadata.distribution(SKIMAGE_DIST)
    except metadata.PackageNotFoundError as exc:
        raise MissingSource(
            f"PyPI package '{SKIMAGE_DIST}' is not installed "
            f"(pip install \"{SKIMAGE_PIP_SPEC}\")"
        ) from exc


def collect_skimage() -> list[Item]:
    """The explicitly listed photographs bundled in the scikit-image wheel."""
    dist = skimage_dist()
    items = []
    for rel, (category, name, lic) in sorted(SKIMAGE_FILES.items()):
        src = Path(str(dist.locate_file(rel)))
        if not src.is_file():
            raise MissingSource(
                f"'{rel}' not found in the installed '{SKIMAGE_DIST}' {dist.version} "
                f"(pip install \"{SKIMAGE_PIP_SPEC}\")"
            )
        items.append(Item(category, name, src, SKIMAGE_DIST, dist.version,
                          f"site-packages/{rel}", lic))
    return items


def read_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if path.suffix == ".gz" else data


def to_jpeg(data: bytes) -> bytes | None:
    """Convert one source image to the output JPEG bytes (None when too small)."""
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        im = ImageOps.exif_transpose(opened)
    has_alpha = im.mode in ("RGBA", "LA", "PA") or (
        im.mode in ("P", "L", "RGB") and "transparency" in im.info
    )
    if has_alpha:
        rgba = im.convert("RGBA")
        visible = rgba.getchannel("A").point(lambda a: 255 if a > ALPHA_THRESHOLD else 0)
        bbox = visible.getbbox()
        if bbox is None:
            return None
        rgba = rgba.crop(bbox)
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        canvas.alpha_composite(rgba)
        im = canvas.convert("RGB")
    else:
        im = im.convert("RGB")
    if max(im.size) < MIN_SIDE:
        return None
    if max(im.size) > MAX_SIDE:
        scale = MAX_SIDE / max(im.size)
        size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
        im = im.resize(size, Image.Resampling.LANCZOS, reducing_gap=None)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=JPEG_QUALITY, optimize=True)
    return buf.getvalue()


def warn(msg: str) -> None:
    print(f"warning: {msg}", file=sys.stderr)


def clean_output(out: Path) -> None:
    """Remove what a previous run generated (and nothing else)."""
    for jpg in sorted(out.glob("*/*.jpg")):
        jpg.unlink()
    for d in sorted(p for p in out.iterdir() if p.is_dir()):
        if d.name == "LICENSES":
            for f in sorted(d.iterdir()):
                if f.is_file():
                    f.unlink()
        if not any(d.iterdir()):
            d.rmdir()
    sources = out / "SOURCES.md"
    if sources.exists():
        sources.unlink()


def write_licenses(out: Path) -> list[str]:
    """Copy the licence texts into <out>/LICENSES; return the written names."""
    lic_dir = out / "LICENSES"
    lic_dir.mkdir(parents=True, exist_ok=True)
    names = []
    for name, src in sorted(LICENSE_FILES.items()):
        dest = lic_dir / name
        if src is None:
            dist = skimage_dist()
            lic = next((f for f in dist.files or [] if f.name in {"LICENSE.txt", "LICENSE"}), None)
            if lic is None:
                raise MissingSource(f"licence file of '{SKIMAGE_DIST}' not found")
            data = Path(str(dist.locate_file(lic))).read_bytes()
        else:
            if not src.is_file():
                raise MissingSource(f"licence file {src} not found")
            data = src.read_bytes()
        dest.write_bytes(data)
        names.append(name)
    return names


def write_sources(out: Path, written: list[Item], versions: dict[str, str],
                  licenses: list[str]) -> None:
    """Write <out>/SOURCES.md: licence overview plus one row per output file."""
    counts = Counter(it.category for it in written)
    lines = [
        "# Demo collection: sources and licences",
        "",
        "Generated by `scripts/build_demo.py` -- do not edit by hand; rerun the script.",
        "",
        f"{len(written)} photographs in {len(counts)} categories, downscaled to a longest "
        f"side of at most {MAX_SIDE} px and re-encoded as JPEG (quality {JPEG_QUALITY}). "
        "Transparent stamps were cropped to their visible pixels and composited on white.",
        "These are modified versions (resized, re-encoded) of the originals.",
        "",
        "## Source packages and licences",
        "",
        f"* **{TUXPAINT_PKG}** (Debian {versions[TUXPAINT_PKG]}), files under "
        f"`{TUXPAINT_ROOT}`. Licence **{TUXPAINT_LICENSE}** -- Debian copyright file, stanza "
        "`Files: *`, \"Copyright: 2002-2022 by Bill Kendrick\", \"either version 2 of the "
        "License, or (at your option) any later version\". See `LICENSES/GPL-2.txt` and "
        "`LICENSES/tuxpaint-stamps-default.copyright`. The complete corresponding sources "
        "(the original stamp files) are available from the Debian source package "
        f"`tuxpaint-stamps` (version {versions[TUXPAINT_PKG]}) or "
        "https://sourceforge.net/projects/tuxpaint/.",
        f"* **{OPENCV_PKG}** (Debian {versions[OPENCV_PKG]}), files under `{OPENCV_ROOT}` "
        f"(upstream `samples/data`). Licence **{OPENCV_LICENSE}** -- Debian copyright file, "
        "stanza `Files: *` (no more specific stanza covers `samples/data`). See "
        "`LICENSES/Apache-2.0.txt` and `LICENSES/opencv-doc.copyright` (contains the "
        "BSD-3-Clause text and the copyright holders).",
        f"* **{SKIMAGE_DIST}** (PyPI {versions[SKIMAGE_DIST]}), images bundled in the wheel "
        "under `site-packages/skimage/data`. Licence per image as stated in the docstrings of "
        "`skimage/data/_fetchers.py` (CC0-1.0 or public domain / no known copyright "
        "restrictions; see the table). See `LICENSES/CC0-1.0.txt`; the code licence of the "
        "package is in `LICENSES/scikit-image.LICENSE.txt`.",
        "",
        "Licence files in `LICENSES/`: " + ", ".join(f"`{n}`" for n in licenses) + ".",
        "",
        "## Categories",
        "",
        "| category | images |",
        "|---|---:|",
    ]
    lines += [f"| {c} | {n} |" for c, n in sorted(counts.items())]
    lines += [
        "",
        "## Files",
        "",
        "| output | package (version) | original path | licence |",
        "|---|---|---|---|",
    ]
    for it in sorted(written, key=lambda i: i.out_rel):
        lines.append(
            f"| `{it.out_rel}` | {it.package} ({it.version}) | `{it.origin}` | {it.license} |"
        )
    (out / "SOURCES.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def build(out: Path) -> dict[str, int]:
    """Build the collection into ``out``; return category -> image count."""
    items = collect_tuxpaint() + collect_opencv() + collect_skimage()
    versions = {it.package: it.version for it in items}

    # Read every source once; byte-identical duplicates are used once (first wins).
    unique: list[tuple[Item, bytes]] = []
    seen: dict[str, str] = {}
    for it in items:
        data = read_bytes(it.source)
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            print(f"skip duplicate {it.origin} (same file as {seen[digest]})")
            continue
        seen[digest] = it.origin
        unique.append((it, data))

    # Refuse ambiguous output names instead of silently renaming.
    names = Counter(it.out_rel for it, _ in unique)
    clashes = sorted(n for n, c in names.items() if c > 1)
    if clashes:
        raise RuntimeError(f"output name clash: {', '.join(clashes)}")

    for src in LICENSE_FILES.values():  # fail before touching the output folder
        if src is not None and not src.is_file():
            raise MissingSource(f"licence file {src} not found (package base-files / doc)")

    out.mkdir(parents=True, exist_ok=True)
    clean_output(out)
    written: list[Item] = []
    for it, data in unique:
        jpeg = to_jpeg(data)
        if jpeg is None:
            print(f"skip too small {it.origin}")
            continue
        dest = out / it.out_rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(jpeg)
        written.append(it)
    licenses = write_licenses(out)
    write_sources(out, written, versions, licenses)
    return dict(sorted(Counter(it.category for it in written).items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder (default: data/demo in the repository)")
    args = parser.parse_args(argv)
    try:
        counts = build(args.out)
    except MissingSource as exc:
        print(f"error: missing source: {exc}", file=sys.stderr)
        return 1
    total_bytes = sum(p.stat().st_size for p in args.out.glob("*/*.jpg"))
    width = max(len(c) for c in counts) if counts else 8
    print(f"\n{'category':<{width}}  images")
    print(f"{'-' * width}  ------")
    for cat, n in counts.items():
        print(f"{cat:<{width}}  {n:6d}")
    print(f"{'-' * width}  ------")
    print(f"{'total':<{width}}  {sum(counts.values()):6d}   ({total_bytes / 1e6:.2f} MB of JPEG)")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
