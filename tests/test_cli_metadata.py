"""The CLI with metadata: ``index --metadata`` reports what it could not use, ``query --where/--near/--max-distance``
filter before similarity, ``query --text`` finds captioned images by their words, ``info`` lists the fields."""

from __future__ import annotations

import contextlib
import io
import json

import pytest

from imgsim import cli
from imgsim.build import build_index
from imgsim.cli import main
from imgsim.engines.local import LocalEngine

from .test_filters_search import StandIn, photo_folder, write_photo

CAPTIONS = ("path,caption,width,tags\n"
            "g0/p000.jpg,A heron standing in the reeds,1,birds\n"
            "g1/p001.jpg,Two otters on a riverbank,2,mammals; water\n"
            "./g2/p002.jpg,A red tram in the rain,3,\n"
            "gone/old.jpg,a photo that was deleted,4,\n"
            "notes.jpg,never indexed,5,\n")


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> tuple:
    """30 photos indexed through ``python -m imgsim index ... --metadata captions.csv``, and what it printed."""
    root = photo_folder(tmp_path_factory.mktemp("cli") / "photos", count=30)
    sidecar = root.parent / "captions.csv"
    sidecar.write_text(CAPTIONS, encoding="utf-8")
    index = root.parent / "ix"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cli, "make_engine", lambda *a, **k: LocalEngine(model_factory=lambda w, p, b: StandIn()))
        printed = _run(["index", str(root), "--index", str(index), "--weights", "random", "--pooling", "avg",
                        "--metadata", str(sidecar), "--quiet"])
    return root, index, printed


def _run(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(argv) == 0
    return out.getvalue()


def query(capsys, index, *args) -> dict:
    assert main(["query", str(index), *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_index_reports_sidecar_rows_it_could_not_use(indexed):
    _, _, printed = indexed
    assert "metadata read from 30 file(s)" in printed
    assert "captions.csv: 3 row(s) used, column(s) caption, tags" in printed
    assert "captions.csv: 2 path(s) not in the index, not used: gone/old.jpg, notes.jpg" in printed
    assert "captions.csv: column(s) width named like a built-in field, not used: rename them" in printed


def test_info_lists_fields_with_type_and_count(capsys, indexed):
    _, index, _ = indexed
    assert main(["info", str(index), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    fields = {f["name"]: (f["type"], f["count"]) for f in info["metadata"]["fields"]}
    assert fields["width"] == ("int", 30) and fields["taken"] == ("date", 22) and fields["lat"] == ("float", 22)
    assert fields["caption"] == ("text", 3) and fields["tags"] == ("text", 2) and fields["camera"] == ("text", 0)
    assert info["metadata"]["keywords"] is True and info["metadata"]["sidecar"] == "captions.csv"
    assert main(["info", str(index)]) == 0
    assert "metadata: 16 fields; images with a value: folder 30, name 30" in capsys.readouterr().out


def test_query_where_filters_before_similarity_and_results_carry_metadata(capsys, indexed):
    root, index, _ = indexed
    out = query(capsys, index, str(root / "g1" / "p007.jpg"), "-k", "4", "--where", "folder = g1",
                "--where", "width >= 45")
    assert out["where"] == ["folder = g1", "width >= 45"]
    assert len(out["neighbors"]) == 4 and out["neighbors"][0]["path"] == "g1/p007.jpg"
    for n in out["neighbors"]:
        assert n["metadata"]["folder"] == "g1" and n["metadata"]["width"] >= 45 and n["path"].startswith("g1/")
    other = query(capsys, index, str(root / "g1" / "p007.jpg"), "-k", "4", "--where", "folder = g0")
    assert all(n["path"].startswith("g0/") for n in other["neighbors"])  # the query itself does not pass
    near = query(capsys, index, "g0/p003.jpg", "-k", "30", "--near", "48.8566,2.3522,2")
    assert near["near"] == "48.8566,2.3522,2" and near["neighbors"]
    assert all(abs(n["metadata"]["lat"] - 48.86) < 0.02 for n in near["neighbors"])
    every = [n["distance"] for n in query(capsys, index, "g0/p003.jpg", "-k", "30")["neighbors"]]
    limit = round(sorted(every)[10], 6)
    capped = query(capsys, index, "g0/p003.jpg", "-k", "30", "--max-distance", str(limit))
    assert capped["max_distance"] == limit and [n["distance"] for n in capped["neighbors"]] == \
        [d for d in every if d <= limit]


def test_a_bad_filter_gets_one_line_naming_the_field(capsys, indexed):
    _, index, _ = indexed
    assert main(["query", str(index), "g0/p003.jpg", "--where", "widht > 3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown field 'widht' (did you mean 'width'?); fields: folder, name, bytes")
    assert err.count("\n") == 1
    assert main(["query", str(index), "g0/p003.jpg", "--where", "taken > July"]) == 1
    assert "taken is a date: 'July' is not one" in capsys.readouterr().err
    assert main(["query", str(index), "g0/p003.jpg", "--near", "48,2"]) == 1
    assert "--near takes LAT,LON,KM" in capsys.readouterr().err


def test_text_finds_a_captioned_image_by_a_word_of_its_caption(capsys, indexed):
    _, index, _ = indexed
    out = query(capsys, index, "--text", "otters")
    assert out["ranking"] == "keywords" and out["query"] == {"text": "otters"}
    first = out["neighbors"][0]
    assert first["path"] == "g1/p001.jpg" and first["scores"]["keywords"]["rank"] == 1
    assert first["distance"] is None and first["metadata"]["caption"] == "Two otters on a riverbank"
    assert [n["path"] for n in query(capsys, index, "--text", "tram")["neighbors"]] == ["g2/p002.jpg"]
    assert query(capsys, index, "--text", "otters", "--where", "folder = g0")["neighbors"] == []
    assert main(["query", str(index), "--text", "heron"]) == 0
    printed = capsys.readouterr().out
    assert "keywords, BM25" in printed and "keywords #1" in printed and "g0/p000.jpg" in printed


def test_text_without_text_metadata_keeps_todays_message(capsys, tmp_path):
    root = tmp_path / "photos"
    for i in range(3):
        write_photo(root / f"p{i}.jpg", seed=i, size=(48, 40))
    build_index(root, tmp_path / "ix", weights="random", pooling="avg", model_factory=lambda w, p, b: StandIn())
    assert main(["query", str(tmp_path / "ix"), "--text", "a red car"]) == 1
    assert "Text search needs a CLIP index" in capsys.readouterr().err
