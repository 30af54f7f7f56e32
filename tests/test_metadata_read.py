"""Metadata from files: EXIF date, camera, lens, GPS, orientation, XMP and IPTC text; broken blocks give none."""

from __future__ import annotations

import io
import shutil
import struct
from pathlib import Path

import pytest
from PIL import ExifTags, Image
from PIL.PngImagePlugin import PngInfo
from PIL.TiffImagePlugin import IFDRational

from imgsim.metadata.fields import BUILTIN
from imgsim.metadata.read import FileMetadata, Problem, count_problems, read_file_metadata

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:subject><rdf:Bag><rdf:li>beach</rdf:li>'
       b'<rdf:li>sunset</rdf:li></rdf:Bag></dc:subject><dc:description><rdf:Alt><rdf:li xml:lang="x-default">'
       b'Waves at dusk</rdf:li></rdf:Alt></dc:description></rdf:Description></rdf:RDF></x:xmpmeta>')


def camera_exif(date: str = "2023:07:14 10:22:01", orientation: int = 1) -> Image.Exif:
    """EXIF as a camera writes it: make, model, orientation, date taken, lens, GPS (Eiffel Tower)."""
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Canon"
    exif[ExifTags.Base.Model] = "Canon EOS 5D"
    exif[ExifTags.Base.Orientation] = orientation
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    sub[ExifTags.Base.DateTimeOriginal] = date
    sub[ExifTags.Base.OffsetTimeOriginal] = "+02:00"
    sub[ExifTags.Base.LensModel] = "EF 50mm f/1.8 II"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (IFDRational(48), IFDRational(51), IFDRational(3024, 100))  # 48°51'30.24"
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (IFDRational(2), IFDRational(17), IFDRational(4020, 100))  # 2°17'40.20"
    return exif


def jpeg(size: tuple[int, int] = (64, 48), **save) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (90, 140, 200)).save(buf, "JPEG", **save)
    return buf.getvalue()


def with_iptc(data: bytes, records: list[tuple[int, int, bytes]]) -> bytes:
    """A JPEG with an APP13 Photoshop block holding IPTC records (Pillow reads IPTC but does not write it)."""
    iptc = b"".join(b"\x1c" + bytes([rec, tag]) + struct.pack(">H", len(v)) + v for rec, tag, v in records)
    block = b"8BIM" + struct.pack(">H", 0x0404) + b"\0\0" + struct.pack(">I", len(iptc)) + iptc + b"\0" * (len(iptc) % 2)
    payload = b"Photoshop 3.0\0" + block
    return data[:2] + b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def test_camera_exif_gives_date_camera_lens_gps_and_orientation(tmp_path):
    path = tmp_path / "2023" / "paris.jpg"
    path.parent.mkdir()
    path.write_bytes(jpeg(exif=camera_exif()))
    meta = read_file_metadata(path, rel="2023/paris.jpg")
    assert meta.problems == ()
    v = meta.values
    assert set(v) == set(BUILTIN)
    assert (v["folder"], v["name"], v["format"], v["bytes"]) == ("2023", "paris.jpg", "JPEG", path.stat().st_size)
    assert v["taken"] == "2023-07-14T10:22:01+02:00"
    assert v["camera"] == "Canon EOS 5D"  # the model already names the make: not "Canon Canon EOS 5D"
    assert v["lens"] == "EF 50mm f/1.8 II"
    assert v["lat"] == pytest.approx(48 + 51 / 60 + 30.24 / 3600, abs=1e-7)
    assert v["lon"] == pytest.approx(2 + 17 / 60 + 40.20 / 3600, abs=1e-7)
    assert (v["width"], v["height"], v["orientation"]) == (64, 48, 1)
    assert v["keywords"] is None and v["description"] is None


def test_bytes_already_read_give_the_same_values(tmp_path):
    data = jpeg(exif=camera_exif())
    (tmp_path / "a.jpg").write_bytes(data)
    assert read_file_metadata(tmp_path / "a.jpg", rel="a.jpg") == read_file_metadata("ignored", data, rel="a.jpg")


def test_southern_and_western_references_make_negative_coordinates_and_make_joins_model():
    exif = camera_exif()
    exif[ExifTags.Base.Make], exif[ExifTags.Base.Model] = "NIKON CORPORATION", "D850"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef], gps[ExifTags.GPS.GPSLatitude] = "S", (33.0, 51.0, 36.0)
    gps[ExifTags.GPS.GPSLongitudeRef], gps[ExifTags.GPS.GPSLongitude] = "W", (70.0, 39.0, 0.0)
    v = read_file_metadata("x.jpg", jpeg(exif=exif)).values
    assert (v["lat"], v["lon"]) == (pytest.approx(-33.86), pytest.approx(-70.65))
    assert v["camera"] == "NIKON CORPORATION D850"


def test_turned_photo_reports_upright_width_and_height():
    v = read_file_metadata("x.jpg", jpeg((64, 48), exif=camera_exif(orientation=6))).values
    assert (v["width"], v["height"], v["orientation"]) == (48, 64, 6)


@pytest.mark.parametrize("date", ["0000:00:00 00:00:00", "2023:13:01 10:00:00", "yesterday"])
def test_an_invalid_date_is_none_with_its_reason(date):
    meta = read_file_metadata("x.jpg", jpeg(exif=camera_exif(date=date)))
    assert meta.values["taken"] is None
    assert meta.problems == (Problem.DATE_INVALID,)
    assert meta.values["camera"] == "Canon EOS 5D"  # the rest of the block is still read


@pytest.mark.parametrize("latitude, ref", [
    ((IFDRational(48, 0), IFDRational(0), IFDRational(0)), "N"),  # zero denominator
    ((95.0, 0.0, 0.0), "N"),  # beyond the pole
    ((48.0, 51.0, 30.0), None),  # no N/S: the sign is unknown
])
def test_an_invalid_gps_position_is_none_with_its_reason(latitude, ref):
    exif = camera_exif()
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitude] = latitude
    if ref is None:
        del gps[ExifTags.GPS.GPSLatitudeRef]
    meta = read_file_metadata("x.jpg", jpeg(exif=exif))
    assert (meta.values["lat"], meta.values["lon"]) == (None, None)
    assert meta.problems == (Problem.GPS_INVALID,)


@pytest.mark.parametrize("block", [
    b"Exif\x00\x00not a tiff header at all",
    camera_exif().tobytes()[:60],  # cut inside the first directory
    b"Exif\x00\x00MM\x00*\x00\x00\x00\x08\xff\xff" + b"\x01" * 30,  # 65,535 entries declared
])
def test_a_corrupt_exif_block_gives_none_and_is_counted_but_the_image_is_read(tmp_path, block):
    source = tmp_path / "source.jpg"
    source.write_bytes(jpeg(exif=block))
    copy = tmp_path / "copy.jpg"  # a temporary copy, as a file on disk is read
    shutil.copyfile(source, copy)
    meta = read_file_metadata(copy, rel="copy.jpg")
    assert meta.problems == (Problem.EXIF_CORRUPT,)
    assert all(meta.values[f] is None for f in ("taken", "camera", "lens", "lat", "lon", "orientation"))
    assert (meta.values["width"], meta.values["height"], meta.values["format"]) == (64, 48, "JPEG")


def test_xmp_keywords_and_description():
    v = read_file_metadata("x.jpg", jpeg(xmp=XMP)).values
    assert v["keywords"] == ["beach", "sunset"]
    assert v["description"] == "Waves at dusk"


def test_xmp_in_a_png():
    info = PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG", pnginfo=info)
    v = read_file_metadata("x.png", buf.getvalue()).values
    assert (v["format"], v["keywords"], v["description"]) == ("PNG", ["beach", "sunset"], "Waves at dusk")


@pytest.mark.parametrize("packet", [
    b"<x:xmpmeta><unclosed",
    b'<?xml version="1.0"?><!DOCTYPE z [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;&a;">]><z>&b;</z>',  # entity bomb
])
def test_a_broken_or_hostile_xmp_packet_is_refused_and_counted(packet):
    meta = read_file_metadata("x.jpg", jpeg(xmp=packet))
    assert meta.problems == (Problem.XMP_CORRUPT,)
    assert meta.values["keywords"] is None


def test_iptc_keywords_and_caption_utf8_and_latin1():
    data = with_iptc(jpeg(), [(2, 25, b"harbour"), (2, 25, "café".encode()), (2, 25, "nuit".encode("latin-1")),
                              (2, 25, "été".encode("latin-1")), (2, 120, b"Boats at night")])
    v = read_file_metadata("x.jpg", data).values
    assert v["keywords"] == ["harbour", "café", "nuit", "été"]
    assert v["description"] == "Boats at night"


def test_xmp_and_iptc_keywords_merge_without_repeats_and_xmp_description_wins():
    data = with_iptc(jpeg(xmp=XMP), [(2, 25, b"sunset"), (2, 25, b"sea"), (2, 120, b"IPTC caption")])
    v = read_file_metadata("x.jpg", data).values
    assert v["keywords"] == ["beach", "sunset", "sea"]
    assert v["description"] == "Waves at dusk"


def test_a_corrupt_iptc_block_is_counted_and_xmp_still_read():
    data = with_iptc(jpeg(xmp=XMP), [(2, 25, b"sea"), (0, 5, b"record 0 does not exist")])
    meta = read_file_metadata("x.jpg", data)
    assert meta.problems == (Problem.IPTC_CORRUPT,)
    assert meta.values["keywords"] == ["beach", "sunset"]


def test_control_characters_in_tags_become_spaces():
    exif = Image.Exif()
    exif[ExifTags.Base.Model] = "Evil\x1b[2J\x07Cam\x00\x00"
    assert read_file_metadata("x.jpg", jpeg(exif=exif)).values["camera"] == "Evil [2J Cam"


def test_only_the_header_is_read():
    data = jpeg((640, 480), exif=camera_exif())
    truncated = data[: len(data) // 3]  # the pixels are mostly missing: decoding would fail
    meta = read_file_metadata("x.jpg", truncated)
    assert meta.problems == ()
    assert (meta.values["width"], meta.values["height"], meta.values["camera"]) == (640, 480, "Canon EOS 5D")


def test_not_an_image_keeps_the_file_fields_and_says_why():
    meta = read_file_metadata("notes/readme.jpg", b"plain text, not a picture")
    assert meta.problems == (Problem.UNREADABLE,)
    assert (meta.values["folder"], meta.values["name"], meta.values["bytes"]) == ("notes", "readme.jpg", 25)
    assert meta.values["width"] is None


def test_count_problems_sums_reasons_by_message():
    items = [FileMetadata({}, (Problem.EXIF_CORRUPT,)), FileMetadata({}, ()),
             FileMetadata({}, (Problem.EXIF_CORRUPT, Problem.GPS_INVALID))]
    assert count_problems(items) == {"corrupt EXIF block": 2, "invalid GPS position": 1}


def test_demo_photos_read_without_problems():
    paths = sorted(DEMO.glob("*/*.jpg"))
    assert len(paths) > 300
    metas = [read_file_metadata(p, rel=p.relative_to(DEMO).as_posix()) for p in paths]
    assert count_problems(metas) == {}
    assert {m.values["format"] for m in metas} == {"JPEG"}
    assert all(max(m.values["width"], m.values["height"]) <= 320 for m in metas)
    assert {m.values["folder"] for m in metas} == {p.parent.name for p in paths}
