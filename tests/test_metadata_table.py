"""The metadata table: aligned rows, field counts, incremental updates, Parquet on disk with checks."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from imgsim.metadata.fields import BUILTIN, Kind
from imgsim.metadata.sidecar import read_sidecar
from imgsim.metadata.table import FILE, MetadataFormatError, MetadataTable

ROWS = [
    {"folder": "birds", "name": "crow.jpg", "bytes": 1200, "width": 320, "height": 240, "format": "JPEG",
     "taken": "2023-07-14T10:22:01+02:00", "camera": "Canon EOS 5D", "lat": 48.8584, "lon": 2.2945,
     "keywords": ["black", "bird"]},
    {"folder": "fish", "name": "cod.jpg", "bytes": 800, "width": 200, "height": 100, "format": "JPEG"},
    {"folder": "fish", "name": "eel.png", "bytes": 300, "width": 50, "height": 60, "format": "PNG",
     "description": "An eel."},
]


def table() -> MetadataTable:
    return MetadataTable.from_rows(ROWS)


def test_fields_list_every_built_in_with_kind_and_count():
    fields = {f.name: (f.kind, f.count) for f in table().fields()}
    assert list(fields) == list(BUILTIN)
    assert fields["folder"] == (Kind.TEXT, 3)
    assert fields["taken"] == (Kind.DATE, 1)
    assert fields["keywords"] == (Kind.LIST, 1)
    assert fields["lens"] == (Kind.TEXT, 0)
    assert table().fields()[0].to_json() == {"name": "folder", "type": "text", "count": 3}


def test_rows_hold_only_known_values():
    assert table().row(1) == {"folder": "fish", "name": "cod.jpg", "bytes": 800, "width": 200, "height": 100,
                              "format": "JPEG"}
    assert [r["name"] for r in table().rows([2, 0])] == ["eel.png", "crow.jpg"]
    assert table().row(0)["keywords"] == ["black", "bird"]


def test_timestamps_are_wall_clock_times():
    ts = table().timestamps("taken").to_pylist()
    assert str(ts[0]) == "2023-07-14 10:22:01" and ts[1:] == [None, None]


def test_update_drops_removed_rows_and_appends_added_ones():
    updated = table().update(removed=[1], added=[{"folder": "new", "name": "a.jpg", "bytes": 5}])
    assert updated.column("name").to_pylist() == ["crow.jpg", "eel.png", "a.jpg"]
    assert updated.column("bytes").to_pylist() == [1200, 300, 5]
    assert len(updated) == 3


def test_assemble_follows_the_builds_sources_and_keeps_sidecar_columns(tmp_path):
    (tmp_path / "s.csv").write_text("path,caption\nbirds/crow.jpg,A crow.\nfish/eel.png,An eel.\n", encoding="utf-8")
    old, unknown = table().with_sidecar(read_sidecar(tmp_path / "s.csv"),
                                        ["birds/crow.jpg", "fish/cod.jpg", "fish/eel.png"])
    assert unknown == []
    # new order: a fresh file first, then old rows 2 and 0 (old row 1 was deleted)
    new = MetadataTable.assemble([{"folder": "ants", "name": "ant.jpg"}, 2, 0], old)
    assert new.column("name").to_pylist() == ["ant.jpg", "eel.png", "crow.jpg"]
    assert new.column("caption").to_pylist() == [None, "An eel.", "A crow."]
    assert new.kinds["caption"] == Kind.TEXT
    with pytest.raises(IndexError, match="row 3 of a metadata table with 3 rows"):
        MetadataTable.assemble([3], old)


def test_a_new_sidecar_replaces_the_previous_ones_columns(tmp_path):
    paths = ["birds/crow.jpg", "fish/cod.jpg", "fish/eel.png"]
    (tmp_path / "one.csv").write_text("path,caption\nfish/cod.jpg,A cod.\n", encoding="utf-8")
    (tmp_path / "two.csv").write_text("path,stars\nfish/cod.jpg,4\n", encoding="utf-8")
    first, _ = table().with_sidecar(read_sidecar(tmp_path / "one.csv"), paths)
    second, _ = first.with_sidecar(read_sidecar(tmp_path / "two.csv"), paths)
    assert "caption" not in second.kinds
    assert second.column("stars").to_pylist() == [None, 4, None]


def test_parquet_round_trip_is_atomic_and_exact(tmp_path):
    (tmp_path / "s.jsonl").write_text('{"path": "fish/cod.jpg", "tags": ["sea"], "when": "2020-01-02"}\n', encoding="utf-8")
    original, _ = table().with_sidecar(read_sidecar(tmp_path / "s.jsonl"), ["birds/crow.jpg", "fish/cod.jpg", "fish/eel.png"])
    path = original.save(tmp_path)
    assert path == tmp_path / FILE
    assert sorted(p.name for p in tmp_path.iterdir()) == [FILE, "s.jsonl"]  # no temporary file left
    loaded = MetadataTable.load(tmp_path, count=3)
    assert loaded.kinds == original.kinds
    assert loaded.rows(range(3)) == original.rows(range(3))


def test_an_empty_table_round_trips(tmp_path):
    MetadataTable.from_rows([]).save(tmp_path)
    loaded = MetadataTable.load(tmp_path, count=0)
    assert len(loaded) == 0 and list(loaded.kinds) == list(BUILTIN)


def _rewrite_meta(path, meta: dict) -> None:
    data = pq.read_table(path)
    pq.write_table(data.replace_schema_metadata({b"imgsim": json.dumps(meta).encode()}), path)


def test_reading_checks_count_version_format_and_damage(tmp_path):
    path = table().save(tmp_path)
    with pytest.raises(MetadataFormatError, match=r"has 3 rows for an index of 4 images\. Rebuild the index"):
        MetadataTable.load(tmp_path, count=4)
    meta = json.loads(pq.read_table(path).schema.metadata[b"imgsim"])
    _rewrite_meta(path, dict(meta, version=2))
    with pytest.raises(MetadataFormatError, match=r"written by a newer imgsim \(metadata format 2\); this imgsim reads format 1"):
        MetadataTable.load(tmp_path)
    for kinds in (dict(meta["kinds"], bytes="text"), dict(meta["kinds"], extra="text")):
        _rewrite_meta(path, dict(meta, kinds=kinds))
        with pytest.raises(MetadataFormatError, match="columns that do not match its recorded kinds"):
            MetadataTable.load(tmp_path)
    pq.write_table(pa.table({"a": [1]}), path)
    with pytest.raises(MetadataFormatError, match="is not an imgsim metadata table"):
        MetadataTable.load(tmp_path)
    path.write_bytes(b"PAR1 truncated")
    with pytest.raises(MetadataFormatError, match=r"is damaged \(.*\)\. Rebuild the index"):
        MetadataTable.load(tmp_path)
    path.unlink()
    with pytest.raises(MetadataFormatError, match="is missing"):
        MetadataTable.load(tmp_path)


def test_values_and_span_give_what_a_filter_bar_offers():
    table = MetadataTable.from_rows([
        {"camera": "Canon EOS 5D", "taken": "2023-07-01", "keywords": ["beach", "sunset"], "width": 3000},
        {"camera": "Canon EOS 5D", "taken": "2021-01-02T10:00:00+02:00", "keywords": ["beach"], "width": 640},
        {"camera": "iPhone 12"}, {}])
    assert table.values("camera") == [("Canon EOS 5D", 2), ("iPhone 12", 1)]
    assert table.values("keywords") == [("beach", 2), ("sunset", 1)] and table.values("keywords", limit=1) == [("beach", 2)]
    assert table.span("taken") == ("2021-01-02T10:00:00", "2023-07-01T00:00:00")  # local time, the offset ignored
    assert table.span("width") == (640, 3000) and table.span("lat") is None
    with pytest.raises(ValueError, match="camera is text: it has no range"):
        table.span("camera")


def test_equals_compares_fields_kinds_and_values_and_fresh_rows_may_carry_sidecar_columns():
    table = MetadataTable.from_rows(ROWS)
    assert table.equals(MetadataTable.from_rows(ROWS)) and not table.equals(None)
    assert not table.equals(MetadataTable.from_rows(ROWS[:2]))
    assert not table.equals(MetadataTable.from_rows([dict(ROWS[0], width=321), *ROWS[1:]]))
    with_caption = MetadataTable({**{n: table.column(n) for n in table.kinds}, "caption": pa.array(["a", None, "c"])},
                                 {**table.kinds, "caption": Kind.TEXT})
    updated = MetadataTable.assemble([2, dict(ROWS[0], caption="kept")], with_caption)
    assert [r.get("caption") for r in updated.rows([0, 1])] == ["c", "kept"]
