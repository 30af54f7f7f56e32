"""One file's metadata from its header: size, format, EXIF date/camera/lens/GPS/orientation, XMP and IPTC text.

Only the header is parsed (``Image.open`` is lazy and no pixel is decoded), so reading costs a small fraction
of extracting features. Nothing here fails an image: a broken block leaves its fields none and says why.
"""

from __future__ import annotations

import enum
import importlib.util
import io
import math
import os
import re
import struct
import warnings
import zlib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from typing import Iterable

from PIL import ExifTags, Image, IptcImagePlugin, UnidentifiedImageError

from imgsim.metadata.fields import BUILTIN

#: Longest text kept from one tag: an EXIF or XMP block is small, but its strings are whatever a file says.
MAX_TEXT = 2000
#: Most keywords kept per image.
MAX_KEYWORDS = 100
#: Pillow reads XMP only with defusedxml (it refuses to parse XMP with the standard, unsafe XML parser).
HAS_DEFUSEDXML = importlib.util.find_spec("defusedxml") is not None

# What Pillow raises on broken headers and metadata blocks; anything else is a bug and should surface.
_BROKEN = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, KeyError, TypeError,
           ZeroDivisionError, UnicodeDecodeError)
_EXIF_DATE = re.compile(r"(\d{4})[:-](\d{2})[:-](\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"[+-]\d{2}:\d{2}")
_TIFF_HEADERS = (b"II*\x00", b"MM\x00*")
_IPTC_KEYWORDS, _IPTC_CAPTION = (2, 25), (2, 120)
_CONTROL = dict.fromkeys([*range(32), 127], " ")  # NUL padding, and bytes a terminal would act on


class Problem(str, enum.Enum):
    """Why part of a file's metadata is none."""

    UNREADABLE = "header unreadable"
    EXIF_CORRUPT = "corrupt EXIF block"
    DATE_INVALID = "invalid EXIF date"
    GPS_INVALID = "invalid GPS position"
    XMP_CORRUPT = "corrupt XMP packet"
    XMP_UNSUPPORTED = "XMP not read: defusedxml is not installed"
    IPTC_CORRUPT = "corrupt IPTC block"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class FileMetadata:
    """Every built-in field of one file (None where unknown) and why any part could not be read."""

    values: dict[str, object]
    problems: tuple[Problem, ...] = ()


def count_problems(items: Iterable[FileMetadata]) -> dict[str, int]:
    """How many files had each problem, by its message (for a build report)."""
    counts = Counter(p.value for item in items for p in item.problems)
    return dict(sorted(counts.items()))


def read_file_metadata(path: str | os.PathLike, data: bytes | None = None, rel: str | None = None) -> FileMetadata:
    """The metadata of the image at ``path`` (from ``data`` when its bytes are already read).

    ``rel`` is the path relative to the collection, which gives ``folder`` and ``name``. Width and height
    are the upright image's (swapped when the EXIF orientation turns it by 90 degrees).
    """
    rel_path = PurePosixPath(rel if rel is not None else os.fspath(path).replace(os.sep, "/"))
    values: dict[str, object] = dict.fromkeys(BUILTIN)
    values["folder"] = "" if str(rel_path.parent) == "." else str(rel_path.parent)
    values["name"] = rel_path.name
    problems: list[Problem] = []
    try:
        values["bytes"] = len(data) if data is not None else os.stat(path).st_size
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # corrupt blocks are reported as problems, not as warnings
            with Image.open(io.BytesIO(data) if data is not None else path) as im:
                values["format"] = im.format
                width, height = im.size
                _read_exif(im, values, problems)
                _read_text_blocks(im, values, problems)
    except (UnidentifiedImageError, Image.DecompressionBombError) + _BROKEN:
        return FileMetadata(values, (Problem.UNREADABLE,))
    turned = values["orientation"] in (5, 6, 7, 8)
    values["width"], values["height"] = (height, width) if turned else (width, height)
    return FileMetadata(values, tuple(problems))


def _load_exif(im: Image.Image) -> Image.Exif | None:
    """The EXIF block, parsed here so that a corrupt one raises (``getexif`` of a JPEG hides the error)."""
    raw = im.info.get("exif")
    if raw is None:
        # TIFF tags are the EXIF (and ImageMagick PNGs keep it in a text chunk): Pillow reads both unseen.
        return im.getexif() if hasattr(im, "tag_v2") or "Raw profile type exif" in im.info else None
    body = raw[6:] if raw.startswith(b"Exif\x00\x00") else raw
    if body[:4] not in _TIFF_HEADERS:
        raise SyntaxError("EXIF block without a TIFF header")
    exif = Image.Exif()
    exif.load(raw)
    return exif


def _read_exif(im: Image.Image, values: dict[str, object], problems: list[Problem]) -> None:
    """Date taken, camera, lens, orientation, description and GPS position from the EXIF block."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            exif = _load_exif(im)
            if exif is None:
                return
            sub = exif.get_ifd(ExifTags.IFD.Exif)
            gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
        except _BROKEN:
            problems.append(Problem.EXIF_CORRUPT)
            return
    # Pillow skips what it cannot read with a warning ("Corrupt EXIF data", "Truncated File Read").
    if any(issubclass(w.category, UserWarning) for w in caught):
        problems.append(Problem.EXIF_CORRUPT)
    make, model = _text(exif.get(ExifTags.Base.Make)), _text(exif.get(ExifTags.Base.Model))
    if make and model and not model.lower().startswith(make.lower()):
        values["camera"] = f"{make} {model}"
    else:
        values["camera"] = model or make
    values["lens"] = _text(sub.get(ExifTags.Base.LensModel))
    orientation = exif.get(ExifTags.Base.Orientation)
    values["orientation"] = orientation if isinstance(orientation, int) and 1 <= orientation <= 8 else None
    values["description"] = _text(exif.get(ExifTags.Base.ImageDescription))
    original = _text(sub.get(ExifTags.Base.DateTimeOriginal))
    if original is not None:
        values["taken"] = _exif_date(original, _text(sub.get(ExifTags.Base.OffsetTimeOriginal)))
        if values["taken"] is None:
            problems.append(Problem.DATE_INVALID)
    if ExifTags.GPS.GPSLatitude in gps or ExifTags.GPS.GPSLongitude in gps:
        position = _gps(gps)
        if position is None:
            problems.append(Problem.GPS_INVALID)
        else:
            values["lat"], values["lon"] = position


def _text(value: object) -> str | None:
    """A tag's text without control characters and padding, or None for an empty or non-text value."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if not isinstance(value, str):
        return None
    value = value.translate(_CONTROL).strip()
    return value[:MAX_TEXT] or None


def _exif_date(text: str, offset: str | None) -> str | None:
    """EXIF ``2023:07:14 10:22:01`` (+ its offset tag) as ISO 8601, or None when it is no real time."""
    match = _EXIF_DATE.match(text)
    if match is None:
        return None
    try:
        value = datetime(*(int(g) for g in match.groups()))
    except ValueError:  # 0000:00:00 00:00:00, month 13
        return None
    iso = value.isoformat()
    return iso + offset if offset and _OFFSET.fullmatch(offset) else iso


def _gps(gps: dict) -> tuple[float, float] | None:
    """Signed decimal degrees from the GPS sub-IFD's degrees/minutes/seconds and N/S, E/W references."""
    lat = _degrees(gps.get(ExifTags.GPS.GPSLatitude), _text(gps.get(ExifTags.GPS.GPSLatitudeRef)), "NS", 90)
    lon = _degrees(gps.get(ExifTags.GPS.GPSLongitude), _text(gps.get(ExifTags.GPS.GPSLongitudeRef)), "EW", 180)
    return None if lat is None or lon is None else (lat, lon)


def _degrees(dms: object, ref: str | None, refs: str, limit: float) -> float | None:
    """One coordinate; None when a part is missing, not a number (a zero denominator) or out of range."""
    if not isinstance(dms, tuple) or not 1 <= len(dms) <= 3 or ref is None or ref.upper() not in refs:
        return None
    try:
        parts = [float(v) for v in dms]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not all(math.isfinite(p) and p >= 0 for p in parts):
        return None
    value = sum(p / 60**i for i, p in enumerate(parts))
    if value > limit:
        return None
    return round(-value if ref.upper() == refs[1] else value, 7)


def _read_text_blocks(im: Image.Image, values: dict[str, object], problems: list[Problem]) -> None:
    """Keywords and description from XMP (dc:subject, dc:description) and IPTC (2:25, 2:120)."""
    keywords: list[str] = []
    description = None
    if any(key in im.info for key in ("xmp", "XML:com.adobe.xmp")) or 700 in getattr(im, "tag_v2", {}):
        if not HAS_DEFUSEDXML:
            problems.append(Problem.XMP_UNSUPPORTED)
        else:
            try:
                xmp = im.getxmp()
            except _BROKEN:  # ParseError is a SyntaxError; defusedxml's refusals are ValueErrors
                problems.append(Problem.XMP_CORRUPT)
            else:
                keywords += _xmp_strings(xmp, "subject")
                description = next(iter(_xmp_strings(xmp, "description")), None)
    try:
        iptc = IptcImagePlugin.getiptcinfo(im) or {}
    except _BROKEN:
        problems.append(Problem.IPTC_CORRUPT)
        iptc = {}
    keywords += _iptc_strings(iptc.get(_IPTC_KEYWORDS))
    description = description or next(iter(_iptc_strings(iptc.get(_IPTC_CAPTION))), None)
    values["description"] = description or values["description"]
    unique = list(dict.fromkeys(k for k in keywords if k))[:MAX_KEYWORDS]
    values["keywords"] = unique or None


def _xmp_strings(node: object, key: str) -> list[str]:
    """Every text under each ``key`` element of Pillow's XMP dictionary (``rdf:Bag``/``rdf:Alt`` lists included)."""
    if isinstance(node, list):
        return [s for item in node for s in _xmp_strings(item, key)]
    if not isinstance(node, dict):
        return []
    return [s for k, v in node.items() for s in (_leaf_strings(v) if k == key else _xmp_strings(v, key))]


def _leaf_strings(node: object) -> list[str]:
    """The texts of one XMP value: a string, ``{"lang": ..., "text": ...}``, or a Bag/Seq/Alt of them."""
    if isinstance(node, str):
        text = _text(node)
        return [text] if text else []
    if isinstance(node, list):
        return [s for item in node for s in _leaf_strings(item)]
    if isinstance(node, dict):
        if "text" in node:
            return _leaf_strings(node["text"])
        return [s for k, v in node.items() if k != "lang" for s in _leaf_strings(v)]
    return []


def _iptc_strings(value: object) -> list[str]:
    """IPTC values (bytes, one or a list) as text: UTF-8 when valid, else Latin-1 (the IPTC default)."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, bytes):
            try:
                text = item.decode("utf-8")
            except UnicodeDecodeError:
                text = item.decode("latin-1")
            if cleaned := _text(text):
                out.append(cleaned)
    return out
