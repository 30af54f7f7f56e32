"""Decoding: hostile files fail with typed reasons; awkward but valid images decode correctly."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from imgsim import decode
from imgsim.decode import DecodeError
from imgsim.errors import SkipReason

from .conftest import make_photo


def _png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge 1-bit greyscale image."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


# --- hostile input -------------------------------------------------------------------------------------

def test_empty_file_is_refused_as_empty(tmp_path):
    p = tmp_path / "empty.jpg"
    p.write_bytes(b"")
    with pytest.raises(DecodeError, match="empty file") as info:
        decode.read_bytes(p)
    assert info.value.reason is SkipReason.EMPTY


def test_text_file_is_not_an_image():
    with pytest.raises(DecodeError) as info:
        decode.model_input(b"hello, I am text pretending to be a jpeg")
    assert info.value.reason is SkipReason.NOT_IMAGE
    assert str(info.value) == "not an image: no image format recognised"


def test_truncated_jpeg_is_corrupt():
    data = _jpeg_bytes(Image.new("RGB", (300, 200), (10, 200, 30)))
    with pytest.raises(DecodeError) as info:
        decode.model_input(data[: len(data) // 2])
    assert info.value.reason is SkipReason.CORRUPT
    assert "truncated" in info.value.detail


def peak_rss_added_mb(setup: str, call: str) -> float:
    """MB that ``call`` adds to the peak resident size of a fresh Python process, after ``setup``.

    RSS, not tracemalloc: Pillow's and libwebp's buffers are allocated in C, where tracemalloc sees nothing.
    """
    import subprocess
    import sys

    script = f"""
from imgsim import decode
{setup}
hwm = lambda: int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1])
before = hwm()  # not ru_maxrss: Linux carries the parent's peak across fork and exec
{call}
print((hwm() - before) / 1024)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def test_decompression_bomb_refused_before_decoding_with_bounded_memory(tmp_path):
    data = bomb_png(40000, 40000)
    assert len(data) < 200
    with pytest.raises(DecodeError) as info:
        decode.model_input(data)
    assert info.value.reason is SkipReason.TOO_LARGE
    (tmp_path / "bomb.png").write_bytes(data)
    call = """
try:
    decode.model_input(data)
except decode.DecodeError:
    pass"""
    # A decoded 40000x40000 image would need 1.6 GB.
    assert peak_rss_added_mb(f"data = open({str(tmp_path / 'bomb.png')!r}, 'rb').read()", call) < 20


def test_image_over_our_pixel_limit_is_too_large_with_dimensions_in_message():
    with pytest.raises(DecodeError, match=r"12000x11000 pixels exceeds the limit of 120,000,000") as info:
        decode.model_input(bomb_png(12000, 11000))
    assert info.value.reason is SkipReason.TOO_LARGE


def test_oversized_file_is_refused_without_reading_it_all(tmp_path):
    p = tmp_path / "huge.jpg"
    p.write_bytes(b"\xff" * 2048)
    with pytest.raises(DecodeError, match="too large") as info:
        decode.read_bytes(p, max_bytes=1024)
    assert info.value.reason is SkipReason.TOO_LARGE


def test_unreadable_file_has_reason(tmp_path):
    with pytest.raises(DecodeError) as info:
        decode.read_bytes(tmp_path / "missing.jpg")
    assert info.value.reason is SkipReason.UNREADABLE


# --- awkward but valid ------------------------------------------------------------------------------------

def test_rgb_jpeg_matches_keras_load_img_exactly(tmp_path):
    """For an ordinary photo the model input is exactly what the reference notebook feeds the model."""
    import keras

    path = make_photo(tmp_path / "photo.jpg", seed=3, size=(333, 251))
    ours = decode.model_input(path.read_bytes())
    ref = keras.utils.img_to_array(keras.utils.load_img(path, target_size=(224, 224)))
    assert ours.shape == (224, 224, 3) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours.astype(np.float32), ref)


def _two_colour(width: int = 40, height: int = 20) -> Image.Image:
    im = Image.new("RGB", (width, height), (255, 0, 0))
    im.paste((0, 0, 255), (width // 2, 0, width, height))  # left red, right blue
    return im


def test_exif_orientation_is_applied():
    im = _two_colour()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise for display
    out = decode.open_rgb(_jpeg_bytes(im, exif=exif.tobytes()))
    assert out.size == (20, 40)
    arr = np.asarray(out).astype(int)
    assert arr[2, 10, 0] > 200 and arr[2, 10, 2] < 60  # the red (left) half is now on top
    assert arr[37, 10, 2] > 200 and arr[37, 10, 0] < 60


def test_malformed_exif_falls_back_to_no_rotation():
    data = _jpeg_bytes(_two_colour())
    garbage = b"Exif\x00\x00" + b"II*\x00" + struct.pack("<I", 0xFFFFFF00) + b"\x12\x01" * 8
    app1 = b"\xff\xe1" + struct.pack(">H", len(garbage) + 2) + garbage
    broken = data[:2] + app1 + data[2:]
    out = decode.open_rgb(broken)
    assert out.size == (40, 20)


def test_cmyk_jpeg_decodes_to_rgb():
    im = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # pure red in CMYK
    out = np.asarray(decode.open_rgb(_jpeg_bytes(im))).astype(int)
    assert out.shape == (32, 32, 3)
    r, g, b = out[16, 16]
    assert r > 200 and g < 60 and b < 60


def test_palette_gif_keeps_its_colours():
    im = Image.new("P", (16, 16))
    im.putpalette([0, 128, 0] + [0, 0, 0] * 255)
    buf = io.BytesIO()
    im.save(buf, format="GIF")
    out = np.asarray(decode.open_rgb(buf.getvalue()))
    assert tuple(out[8, 8]) == (0, 128, 0)


def test_rgba_transparency_is_composited_on_white_not_black(tmp_path):
    im = Image.new("RGBA", (20, 20), (0, 0, 0, 0))  # fully transparent black
    im.paste((0, 0, 255, 255), (0, 0, 10, 20))  # opaque blue left half
    out = np.asarray(decode.open_rgb(_png_bytes(im)))
    assert tuple(out[10, 15]) == (255, 255, 255)
    assert tuple(out[10, 5]) == (0, 0, 255)


def test_16bit_greyscale_is_scaled_not_clipped():
    arr = np.full((10, 10), 32896, dtype=np.uint16)  # mid grey in 16 bits
    arr[:, :5] = 65535
    im = Image.fromarray(arr)
    assert im.mode.startswith("I")
    out = np.asarray(decode.open_rgb(_png_bytes(im)))
    assert tuple(out[5, 8]) == (128, 128, 128)
    assert tuple(out[5, 2]) == (255, 255, 255)


def test_one_bit_and_greyscale_images_decode():
    one = Image.new("1", (8, 8), 1)
    grey = Image.new("L", (8, 8), 77)
    assert tuple(np.asarray(decode.open_rgb(_png_bytes(one)))[4, 4]) == (255, 255, 255)
    assert tuple(np.asarray(decode.open_rgb(_png_bytes(grey)))[4, 4]) == (77, 77, 77)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (16, 16), c).convert("P") for c in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = np.asarray(decode.open_rgb(buf.getvalue())).astype(int)
    assert out[8, 8, 0] > 200 and out[8, 8, 2] < 60


def test_model_input_is_224_square_uint8_for_any_size():
    out = decode.model_input(_png_bytes(Image.new("RGB", (7, 500), (1, 2, 3))))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    assert tuple(out[100, 100]) == (1, 2, 3)


def test_model_input_squashes_with_the_filter_the_backbone_names():
    """Nearest (load_img's) unless a backbone asks for another: bicubic is Pillow's, on the same decode."""
    path_im = Image.effect_noise((333, 251), 60).convert("RGB")
    data = _png_bytes(path_im)
    nearest = np.asarray(path_im.resize((224, 224), Image.Resampling.NEAREST))
    bicubic = np.asarray(path_im.resize((224, 224), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(decode.model_input(data), nearest)
    np.testing.assert_array_equal(decode.model_input(data, resample="nearest"), nearest)
    np.testing.assert_array_equal(decode.model_input(data, resample="bicubic"), bicubic)
    np.testing.assert_array_equal(decode.resize_for_model(path_im, "bicubic"), bicubic)
    assert np.abs(bicubic.astype(int) - nearest).mean() > 10  # the filter really changes what the model sees
    assert set(decode.RESAMPLE) == {"nearest", "bilinear", "bicubic"} and decode.DEFAULT_RESAMPLE == "nearest"
    with pytest.raises(ValueError, match=r"^unknown resize filter 'lanczos': use one of nearest, bilinear, bicubic$"):
        decode.model_input(data, resample="lanczos")


@pytest.mark.parametrize("mode, off_by", [("RGB", 1), ("RGBA", 6)])
def test_a_large_upload_is_sampled_down_with_the_backbones_filter(mode, off_by):
    """Past EXACT_UPLOAD_PIXELS an upload is reduced before the 224 squash: with a bicubic backbone, by bicubic
    too (RGBA through nearest to twice the working size first), so noise averages out instead of aliasing.
    Noise of standard deviation 60: the direct bicubic squash leaves 3.4, RGB uploads 3.4, RGBA 6.6; nearest 58."""
    noise = Image.effect_noise((4000, 2500), 60).convert(mode)
    data = _png_bytes(noise)
    assert 4000 * 2500 > decode.EXACT_UPLOAD_PIXELS
    direct = decode.model_input(data, resample="bicubic").astype(int)
    upload = decode.upload_model_input(data, resample="bicubic").astype(int)
    aliased = decode.upload_model_input(data).astype(int)  # today's default: nearest all the way
    assert np.abs(upload - direct).mean() < off_by
    assert upload.std() < 8 < 30 < aliased.std()


def test_thumbnail_square_and_bounded():
    data = _jpeg_bytes(Image.new("RGB", (800, 400), (9, 9, 9)))
    assert decode.thumbnail(data, 64, square="crop").size == (64, 64)
    padded = decode.thumbnail(data, 64, square="pad")
    assert padded.size == (64, 64) and padded.getpixel((32, 2)) == (255, 255, 255)
    assert max(decode.thumbnail(data, 100).size) == 100


# --- uploads: bounded memory -----------------------------------------------------------------------------

def test_ordinary_upload_decodes_exactly_as_model_input():
    for im in (Image.new("RGB", (1600, 1200), (20, 90, 200)), Image.new("RGBA", (640, 480), (1, 2, 3, 100))):
        data = _png_bytes(im)
        np.testing.assert_array_equal(decode.upload_model_input(data), decode.model_input(data))
    photo = _jpeg_bytes(Image.effect_noise((3000, 2000), 60).convert("RGB"))
    np.testing.assert_array_equal(decode.upload_model_input(photo), decode.model_input(photo))


def test_large_upload_is_sampled_down_and_still_matches_the_picture():
    # Left half red, right half blue: the model input must show the same halves.
    im = Image.new("RGB", (6000, 4000), (220, 10, 10))
    im.paste((10, 10, 220), (3000, 0, 6000, 4000))
    for data in (_jpeg_bytes(im), _png_bytes(im)):
        out = decode.upload_model_input(data)
        assert out.shape == (224, 224, 3)
        assert out[:, :100, 0].mean() > 180 and out[:, 124:, 2].mean() > 180
        assert decode.upload_thumbnail(data, 256).size == (256, 171)


def test_upload_over_the_pixel_cap_is_refused_from_the_header():
    data = bomb_png(8000, 6000)  # 48 MP: under Pillow's limit, over the upload cap
    with pytest.raises(DecodeError, match=r"^too large: 8000x6000 pixels exceeds the upload limit of 40,000,000$"):
        decode.upload_model_input(data)
    assert decode.UPLOAD_MAX_PIXELS < Image.MAX_IMAGE_PIXELS


def test_webp_uploads_are_capped_at_16_mp():
    """libwebp decodes at full size only and holds two RGBA frames: 16 MP is its cap, not the 40 MP of others."""
    def webp(width: int, height: int) -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", (width, height), (200, 40, 90)).save(buf, format="WEBP", lossless=True, method=0)
        return buf.getvalue()

    np.testing.assert_array_equal(decode.upload_model_input(webp(4000, 4000)), np.full((224, 224, 3), (200, 40, 90)))
    with pytest.raises(DecodeError, match=r"^too large: 4001x4000 pixels exceeds the upload limit of 16,000,000$"):
        decode.upload_model_input(webp(4001, 4000))
    # The same pixels in another format are under the general cap.
    assert decode.upload_model_input(_png_bytes(Image.new("RGB", (4001, 4000), (200, 40, 90)))).shape == (224, 224, 3)


def test_at_most_two_large_uploads_decode_at_once(monkeypatch):
    import threading

    inside, most, lock, go = [0], [0], threading.Condition(), threading.Event()

    def held_decode(data, max_pixels, resample):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
            lock.notify_all()
        go.wait(60)
        with lock:
            inside[0] -= 1
        return Image.new("RGB", (8, 8))

    monkeypatch.setattr(decode, "_open_reduced", held_decode)
    large = bomb_png(4000, 3000)  # 12 MP: over EXACT_UPLOAD_PIXELS, so decoded by the bounded path
    done = []
    threads = [threading.Thread(target=lambda: done.append(decode.open_upload(large).size)) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        with lock:
            assert lock.wait_for(lambda: inside[0] >= 2, timeout=60)
        # Both permits are held by the two decodes running; the other two uploads wait for one.
        assert decode.LARGE_DECODES == 2 and not decode._large_decodes.acquire(blocking=False)
    finally:
        go.set()
        for t in threads:
            t.join(60)
    assert done == [(8, 8)] * 4 and most[0] == 2
    # A small upload never waits for a permit.
    assert decode.open_upload(_png_bytes(Image.new("RGB", (30, 20)))).size == (30, 20)


def test_pillow_bomb_message_does_not_end_with_two_full_stops():
    with pytest.raises(DecodeError) as info:
        decode.upload_model_input(bomb_png(40000, 40000))
    message = f"That upload cannot be used: {info.value}."  # how the dashboard words it
    assert not message.endswith("..") and message.endswith("attack.")


@pytest.mark.parametrize("resample", ["nearest", "bicubic"])
def test_worst_case_upload_adds_at_most_300_mb_to_peak_rss(tmp_path, resample):
    """A 40 MP RGBA PNG (the largest accepted, 4 bytes a pixel) decoded in a fresh process, for a nearest and a
    bicubic backbone (Pillow filters RGBA bicubically in a premultiplied full-size copy: 330 MB if let)."""
    path = tmp_path / "worst.png"
    Image.new("RGBA", (8000, 5000), (10, 200, 30, 128)).save(path)
    added_mb = peak_rss_added_mb(f"data = open({str(path)!r}, 'rb').read()",
                                 f"decode.upload_model_input(data, {resample!r})\ndecode.upload_thumbnail(data)")
    assert added_mb <= 300, added_mb
