"""Image decoding: bytes to RGB pixels the way the reference pipeline sees them, without ever crashing.

The reference notebook uses ``keras.utils.load_img(path, target_size=(224, 224))``: Pillow decode,
``convert("RGB")``, nearest-neighbour resize of the whole image. :func:`model_input` reproduces that
exactly for ordinary RGB photos, and does better where ``load_img`` is wrong: EXIF orientation is
applied, transparency is composited on white (not black) and 16-bit greyscale is scaled, not clipped.
The resize filter is the backbone's (``Capabilities.resample``): nearest for the reference, bicubic for a
network evaluated that way (EfficientNet-Lite0).
"""

from __future__ import annotations

import io
import struct
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from imgsim.errors import ImgsimError, SkipReason

MODEL_SIZE = (224, 224)
#: The resize filters a backbone may ask for, by the name it declares (``Capabilities.resample``).
RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
            "bicubic": Image.Resampling.BICUBIC}
#: ``load_img``'s filter: the reference pipeline's, and what every function here uses unless told otherwise.
DEFAULT_RESAMPLE = "nearest"
#: Largest image accepted, in pixels (a 100 MP medium-format photo fits; a decompression bomb does not).
MAX_PIXELS = 120_000_000
#: Largest file accepted, in bytes.
MAX_BYTES = 512 * 1024 * 1024

# Errors Pillow raises on broken data; anything else is a bug and should surface.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError, KeyError)


class DecodeError(ImgsimError):
    """A file or upload that cannot be used as an image, with its typed reason."""

    def __init__(self, reason: SkipReason, detail: str):
        detail = detail.rstrip(". ")  # messages add their own full stop (Pillow's end with one: no "..")
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


def read_bytes(path: str | Path, max_bytes: int = MAX_BYTES) -> bytes:
    """Read a whole file, refusing empty and oversized ones with a typed reason."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except OSError as exc:
        raise DecodeError(SkipReason.UNREADABLE, exc.strerror or str(exc)) from None
    check_size(len(data), max_bytes)
    return data


def check_size(n_bytes: int, max_bytes: int = MAX_BYTES) -> None:
    """Refuse empty and oversized inputs before reading them."""
    if n_bytes == 0:
        raise DecodeError(SkipReason.EMPTY, "0 bytes")
    if n_bytes > max_bytes:
        raise DecodeError(SkipReason.TOO_LARGE, f"larger than {max_bytes // (1024 * 1024)} MiB")


def _open_image(data: bytes) -> Image.Image:
    """Open image bytes lazily (header only), turning Pillow's failures into typed skip reasons."""
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise DecodeError(SkipReason.NOT_IMAGE, "no image format recognised") from None
    except Image.DecompressionBombError as exc:
        raise DecodeError(SkipReason.TOO_LARGE, str(exc)) from None
    except _DECODE_ERRORS as exc:
        raise DecodeError(SkipReason.CORRUPT, str(exc) or type(exc).__name__) from None


def open_rgb(data: bytes, max_pixels: int = MAX_PIXELS, draft: tuple[int, int] | None = None) -> Image.Image:
    """Decode image bytes to an upright RGB image (first frame; transparency on white).

    The declared size is checked against ``max_pixels`` before any pixel is decoded, so a
    decompression bomb costs nothing. ``draft`` lets JPEG decode at reduced scale (thumbnails only).
    """
    check_size(len(data), max_bytes=max(len(data), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning)  # we fall back to no rotation
        im = _open_image(data)
        width, height = im.size
        if width * height > max_pixels:
            raise DecodeError(SkipReason.TOO_LARGE,
                              f"{width}x{height} pixels exceeds the limit of {max_pixels:,}")
        if width == 0 or height == 0:
            raise DecodeError(SkipReason.CORRUPT, f"declared size {width}x{height}")
        try:
            im.seek(0)
            if draft is not None and im.format == "JPEG":
                im.draft("RGB", draft)
            im.load()
        except _DECODE_ERRORS as exc:
            raise DecodeError(SkipReason.CORRUPT, str(exc) or type(exc).__name__) from None
        return _to_rgb(_upright(im))


def _upright(im: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; a malformed EXIF block means no rotation."""
    try:
        return ImageOps.exif_transpose(im)
    except _DECODE_ERRORS + (TypeError, ZeroDivisionError):
        return im


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I") or im.mode == "F":
        return Image.fromarray(_scale_to_uint8(np.asarray(im), im.mode)).convert("RGB")
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info
    if has_alpha:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map 16-bit, 32-bit integer and float greyscale to 0..255 by the range the mode implies."""
    values = arr.astype(np.float64)
    peak = values.max() if values.size else 0.0
    if mode.startswith("I;16") or (mode == "I" and peak > 255):
        values = values * (255.0 / 65535.0)
    elif mode == "F" and peak <= 1.0:
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def model_input(data: bytes, max_pixels: int = MAX_PIXELS, resample: str = DEFAULT_RESAMPLE) -> np.ndarray:
    """Decode bytes to the 224x224x3 uint8 array the model sees (``resample``: the backbone's filter)."""
    return resize_for_model(open_rgb(data, max_pixels=max_pixels), resample)


def resize_for_model(im: Image.Image, resample: str = DEFAULT_RESAMPLE) -> np.ndarray:
    """The whole image squashed to 224x224 with the filter named ``resample`` (nearest: as the reference)."""
    if im.size != MODEL_SIZE:
        im = im.resize(MODEL_SIZE, _resample_filter(resample))
    return np.asarray(im, dtype=np.uint8)


def _resample_filter(name: str) -> Image.Resampling:
    """The Pillow filter for a name in :data:`RESAMPLE`; a ValueError names them (a backbone declared another)."""
    if name not in RESAMPLE:
        raise ValueError(f"unknown resize filter {name!r}: use one of {', '.join(RESAMPLE)}")
    return RESAMPLE[name]


def small_jpeg(im: Image.Image, size: int = 64, quality: int = 75) -> bytes:
    """A tiny JPEG (longest side ``size``) kept in the index for hover previews on the map."""
    small = im.copy()
    small.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def thumbnail(data: bytes, size: int = 256, square: str | None = None) -> Image.Image:
    """A display thumbnail: longest side ``size``, or a ``size`` square made by ``"crop"`` (centre) or
    ``"pad"`` (whole image on white)."""
    im = open_rgb(data, draft=(size, size))
    if square == "crop":
        return ImageOps.fit(im, (size, size), Image.Resampling.LANCZOS)
    if square == "pad":
        return ImageOps.pad(im, (size, size), Image.Resampling.LANCZOS, color=(255, 255, 255))
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    return im


# --- uploads: bounded memory per request -------------------------------------------------------------------

#: Largest upload accepted, in pixels: below Pillow's decompression-bomb warning (89.5 MP), and small
#: enough that the worst case (4 bytes per pixel, e.g. RGBA PNG) decodes in about 160 MB.
UPLOAD_MAX_PIXELS = 40_000_000
#: Lower caps where the decoder cannot work at reduced scale and holds extra full-size buffers (Pillow's
#: WebP decoder keeps libwebp's RGBA frame and its own copy: about 15 bytes a pixel, measured).
UPLOAD_MAX_PIXELS_BY_FORMAT = {"WEBP": 16_000_000}
#: Uploads up to this size decode exactly as :func:`model_input` (and ``load_img``); larger ones are
#: sampled down first (JPEG: Pillow's draft mode, the decoder skips detail; others: the backbone's filter),
#: which keeps every model input a sample of the original image by that filter (nearest: as ``load_img``).
EXACT_UPLOAD_PIXELS = 8_000_000
#: Longest side kept from a large upload: enough for the 224 x 224 model input and a 256 px thumbnail.
UPLOAD_WORKING_SIDE = 1024
#: Large decodes running at once in one process (each may hold ~160 MB while it runs).
LARGE_DECODES = 2
_large_decodes = threading.BoundedSemaphore(LARGE_DECODES)


def open_upload(data: bytes, max_pixels: int = UPLOAD_MAX_PIXELS, resample: str = DEFAULT_RESAMPLE) -> Image.Image:
    """Decode an upload to an upright RGB image with bounded memory; small ones exactly as :func:`open_rgb`.

    ``resample`` is the filter that samples a large upload down to its working size (the backbone's own).
    """
    width, height = _declared_size(data, max_pixels)
    if width * height <= EXACT_UPLOAD_PIXELS:
        return open_rgb(data, max_pixels=max_pixels)
    with _large_decodes:
        return _open_reduced(data, max_pixels, resample)


def upload_model_input(data: bytes, resample: str = DEFAULT_RESAMPLE) -> np.ndarray:
    """The 224x224x3 model input of an upload, decoded with bounded memory (``resample``: the backbone's filter)."""
    return resize_for_model(open_upload(data, resample=resample), resample)


def upload_thumbnail(data: bytes, size: int = 256) -> Image.Image:
    """A display thumbnail of an upload (longest side ``size``), decoded with bounded memory."""
    im = open_upload(data)
    im.thumbnail((size, size), Image.Resampling.LANCZOS)
    return im


def _declared_size(data: bytes, max_pixels: int) -> tuple[int, int]:
    """Width and height from the header only; too-large and unreadable data are refused here."""
    check_size(len(data), max_bytes=max(len(data), 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with _open_image(data) as im:
            width, height = im.size
            max_pixels = min(max_pixels, UPLOAD_MAX_PIXELS_BY_FORMAT.get(im.format or "", max_pixels))
    if width * height > max_pixels:
        raise DecodeError(SkipReason.TOO_LARGE, f"{width}x{height} pixels exceeds the upload limit of {max_pixels:,}")
    return width, height


def _open_reduced(data: bytes, max_pixels: int, resample: str = DEFAULT_RESAMPLE) -> Image.Image:
    """A large upload at most :data:`UPLOAD_WORKING_SIDE` on its longest side, converted only once small.

    Reduced with the model's own filter, so a bicubic model input stays (close to) a bicubic sample of the
    original.
    """
    reduce = _resample_filter(resample)  # outside the try: a wrong name is no corrupt file
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        warnings.filterwarnings("ignore", "Corrupt EXIF data", UserWarning)
        im = Image.open(io.BytesIO(data))
        try:
            im.seek(0)
            if im.format == "JPEG":
                im.draft(im.mode if im.mode in ("RGB", "L", "CMYK") else "RGB",
                         (UPLOAD_WORKING_SIDE, UPLOAD_WORKING_SIDE))
            im.load()
            scale = UPLOAD_WORKING_SIDE / max(im.size)
            if scale < 1:
                size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
                exif = im.getexif()
                if reduce != Image.Resampling.NEAREST and im.mode in ("LA", "RGBA") and scale < 0.5:
                    # Pillow filters these premultiplied, in a full-size copy (+160 MB at 40 MP): nearest to
                    # twice the size first, the model's filter from there.
                    im = im.resize((2 * size[0], 2 * size[1]), Image.Resampling.NEAREST)
                im = im.resize(size, reduce)  # in the file's own mode: no full-size copy
                if exif:
                    im.info["exif"] = exif.tobytes()
        except _DECODE_ERRORS as exc:
            raise DecodeError(SkipReason.CORRUPT, str(exc) or type(exc).__name__) from None
        return _to_rgb(_upright(im))
