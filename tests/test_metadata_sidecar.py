"""Sidecar files: CSV and JSON Lines keyed by path, types inferred, unknown paths and clashes reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from imgsim.metadata.fields import Kind
from imgsim.metadata.sidecar import SidecarError, infer_column, read_sidecar
from imgsim.metadata.table import MetadataTable

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_csv_columns_are_kept_with_inferred_kinds(tmp_path):
    side = read_sidecar(write(tmp_path / "meta.csv", (
        "path,caption,rating,score,shot,zip,flag\n"
        "a/one.jpg,A red boat,5,0.5,2023-07-01,02134,true\n"
        "./a/two.jpg,,3,1,2023-07-02T10:00:00Z,10001,false\n"
        "b\\three.jpg,Harbour at night,,1e3,,,\n")))
    assert side.kinds == {"caption": Kind.TEXT, "rating": Kind.INT, "score": Kind.FLOAT, "shot": Kind.DATE,
                          "zip": Kind.TEXT, "flag": Kind.TEXT}
    assert side.rows == {
        "a/one.jpg": {"caption": "A red boat", "rating": 5, "score": 0.5, "shot": "2023-07-01", "zip": "02134",
                      "flag": "true"},
        "a/two.jpg": {"rating": 3, "score": 1.0, "shot": "2023-07-02T10:00:00+00:00", "zip": "10001", "flag": "false"},
        "b/three.jpg": {"caption": "Harbour at night", "score": 1000.0},
    }
    assert (side.clashes, side.duplicates, side.no_path) == ((), (), 0)


def test_jsonl_odd_types(tmp_path):
    lines = [
        {"path": "a.jpg", "tags": ["sea", "boat"], "n": 1, "mixed": 3, "obj": {"k": 1}, "big": 2**70, "when": "2023-07-01"},
        {"path": "b.jpg", "tags": [], "n": 2.5, "mixed": "three", "obj": None, "when": "2023-02-30"},
        {"path": "c.jpg", "tags": ["x", 7], "n": None, "mixed": True, "big": 1},
    ]
    side = read_sidecar(write(tmp_path / "m.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n"))
    assert side.kinds == {"tags": Kind.LIST, "n": Kind.FLOAT, "mixed": Kind.TEXT, "obj": Kind.TEXT,
                          "big": Kind.FLOAT, "when": Kind.TEXT}
    assert side.rows["a.jpg"] == {"tags": ["sea", "boat"], "n": 1.0, "mixed": "3", "obj": '{"k":1}',
                                  "big": float(2**70), "when": "2023-07-01"}
    assert side.rows["b.jpg"] == {"n": 2.5, "mixed": "three", "when": "2023-02-30"}  # an empty list is missing
    assert side.rows["c.jpg"] == {"tags": ["x", "7"], "mixed": "true", "big": 1.0}


@pytest.mark.parametrize("values, kind, converted", [
    (["1", "-2", "+3"], Kind.INT, [1, -2, 3]),
    (["1", "2.5"], Kind.FLOAT, [1.0, 2.5]),
    (["007", "8"], Kind.TEXT, ["007", "8"]),  # an identifier with a leading zero stays text
    (["nan", "1"], Kind.TEXT, ["nan", "1"]),  # no NaN or infinity from text
    (["inf"], Kind.TEXT, ["inf"]),
    (["2023-07-01", "2023-07-01 10:22"], Kind.DATE, ["2023-07-01", "2023-07-01T10:22:00"]),
    (["20230701"], Kind.INT, [20230701]),  # a number, not a date
    ([True, False], Kind.TEXT, ["true", "false"]),
    ([str(2**63)], Kind.FLOAT, [float(2**63)]),
])
def test_infer_column(values, kind, converted):
    assert infer_column(values) == (kind, converted)


def test_unknown_paths_are_returned_and_clashing_columns_reported(tmp_path):
    side = read_sidecar(write(tmp_path / "m.csv", "path,width,caption\nx.jpg,9,known\nghost.jpg,1,nobody\nx.jpg,9,again\n,3,no path\n"))
    assert side.clashes == ("width",)
    assert "width" not in side.kinds
    assert side.duplicates == ("x.jpg",)
    assert side.no_path == 1
    table = MetadataTable.from_rows([{"name": "x.jpg", "width": 640}, {"name": "y.jpg", "width": 320}])
    joined, unknown = table.with_sidecar(side, ["x.jpg", "y.jpg"])
    assert unknown == ["ghost.jpg"]
    assert joined.column("caption").to_pylist() == ["again", None]  # the last row of a repeated path wins
    assert joined.column("width").to_pylist() == [640, 320]  # the built-in field is not overwritten


@pytest.mark.parametrize("name, text, message", [
    ("m.csv", "file,caption\na.jpg,x\n", r"^m\.csv has no 'path' column \(columns: file, caption\); add one"),
    ("m.csv", "", r"^m\.csv is empty"),
    ("m.csv", "path,a,a\n", r"column 'a' appears more than once"),
    ("m.csv", "path,,b\n", r"column 2 has no name"),
    ("m.csv", "path,a\nx.jpg,1,2\n", r"^m\.csv line 2: 3 cells for 2 columns"),
    ("m.jsonl", '{"path": "a.jpg"}\n{"path": "b.jpg", "x": NaN}\n', r"^m\.jsonl line 2 is not JSON \(NaN is not a JSON value"),
    ("m.jsonl", '{"path": "a.jpg"}\n[1, 2]\n', r"^m\.jsonl line 2 is not a JSON object"),
    ("m.jsonl", '{"caption": "a"}\n', r"^m\.jsonl line 1 has no 'path' key"),
    ("m.jsonl", '{"path": 5}\n', r"^m\.jsonl line 1: 'path' is 5, not text"),
    ("m.txt", "path\n", r"^m\.txt: a metadata file is \.csv or \.jsonl"),
])
def test_unusable_files_are_refused_naming_file_and_line(tmp_path, name, text, message):
    with pytest.raises(SidecarError, match=message):
        read_sidecar(write(tmp_path / name, text))


def test_non_utf8_and_missing_files(tmp_path):
    (tmp_path / "latin.csv").write_bytes("path,caption\na.jpg,caf\xe9\n".encode("latin-1"))
    with pytest.raises(SidecarError, match=r"latin\.csv is not UTF-8 text .*save it as UTF-8"):
        read_sidecar(tmp_path / "latin.csv")
    with pytest.raises(SidecarError, match=r"Cannot read the metadata file .*nothing\.csv"):
        read_sidecar(tmp_path / "nothing.csv")


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    (tmp_path / "bom.csv").write_bytes("\ufeffpath,caption\na.jpg,x\n".encode("utf-8"))
    assert read_sidecar(tmp_path / "bom.csv").rows == {"a.jpg": {"caption": "x"}}


def test_demo_captions_cover_every_demo_photo():
    side = read_sidecar(DEMO / "captions.csv")
    photos = sorted(p.relative_to(DEMO).as_posix() for p in DEMO.glob("*/*.jpg"))
    assert sorted(side.rows) == photos
    assert side.kinds == {"caption": Kind.TEXT, "tags": Kind.TEXT, "source": Kind.TEXT}
    assert side.rows["birds/heron_greatblue_flying.jpg"]["caption"] == "A great blue heron."
    assert side.rows["mammals/chelsea_cat.jpg"] == {"caption": "Chelsea the cat.", "source": "scikit-image"}
    assert "caption" not in side.rows["fruit/apple_closeup.jpg"]  # opencv-doc ships no description
