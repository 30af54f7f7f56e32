"""Keyword search (BM25 over metadata text) and reciprocal rank fusion with vector rankings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from imgsim.metadata.fields import MetadataError
from imgsim.metadata.fusion import FusedHit, SourceHit, parse_fusion, rrf
from imgsim.metadata.keywords import KeywordIndex, document_texts, has_text_metadata
from imgsim.metadata.read import read_file_metadata
from imgsim.metadata.sidecar import read_sidecar
from imgsim.metadata.table import MetadataFormatError, MetadataTable

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


@pytest.fixture(scope="module")
def demo() -> tuple[list[str], MetadataTable]:
    """The demo collection's metadata table with its captions sidecar, as the index would hold it."""
    paths = sorted(p.relative_to(DEMO).as_posix() for p in DEMO.glob("*/*.jpg"))
    table = MetadataTable.from_rows([read_file_metadata(DEMO / p, rel=p).values for p in paths])
    table, unknown = table.with_sidecar(read_sidecar(DEMO / "captions.csv"), paths)
    assert unknown == []
    return paths, table


def test_bm25_finds_a_captioned_photo_by_a_word_of_its_caption(demo):
    paths, table = demo
    index = KeywordIndex.from_table(table)
    rows, scores = index.search("Eileen Collins", k=5)
    assert [paths[r] for r in rows] == ["misc/astronaut.jpg"]  # only its caption names her
    rows, _ = index.search("Pompeii", k=5)
    assert [paths[r] for r in rows] == ["coins/greek_coins.jpg"]
    rows, scores = index.search("heron", k=10)
    assert {paths[r] for r in rows} == {"birds/heron_greatblue.jpg", "birds/heron_greatblue_flying.jpg"}
    assert np.all(np.diff(scores) <= 0) and np.all(scores > 0)


def test_file_folder_and_tag_words_are_searched(demo):
    paths, table = demo
    index = KeywordIndex.from_table(table)
    rows, _ = index.search("canadian", k=50)  # a tag of the coins (symbols/money/canadian/coins), and one caption
    cad = {p for p in paths if p.startswith("coins/cad_")}
    assert len(cad) > 3 and {paths[r] for r in rows} == cad | {"scenes/inukshuk_photo.jpg"}
    rows, _ = index.search("swallowtail", k=5)  # only in the file name: opencv-doc ships no caption
    assert [paths[r] for r in rows] == ["invertebrates/swallowtail_butterfly.jpg"]


def test_the_mask_filters_before_ranking_and_k_is_clamped(demo):
    paths, table = demo
    index = KeywordIndex.from_table(table)
    birds = np.array([p.startswith("birds/") for p in paths])
    rows, _ = index.search("a", k=5)
    assert rows.size == 0  # a stopword alone matches nothing
    everything, _ = index.search("penguin", k=10_000)
    masked, _ = index.search("penguin", k=10_000, mask=~birds)
    assert len(everything) > len(masked) and set(masked) < set(everything)
    assert not any(birds[masked])


def test_query_length_is_bounded(demo):
    with pytest.raises(MetadataError, match="a keyword query is at most 500 characters, not 501"):
        KeywordIndex.from_table(demo[1]).search("x" * 501, k=3)


def test_document_texts_split_file_names_and_folders():
    table = MetadataTable.from_rows([{"folder": "2023/beach_trip", "name": "heron_flying-01.jpg", "camera": "Canon",
                                      "keywords": ["sea", "sky"], "description": "Evening."}])
    assert document_texts(table) == ["2023 beach trip heron flying-01 sea sky Evening."]
    assert has_text_metadata(table)
    assert not has_text_metadata(MetadataTable.from_rows([{"folder": "a", "name": "b.jpg", "camera": "Canon"}]))


def test_a_collection_without_words_searches_to_nothing(tmp_path):
    index = KeywordIndex().fit(["", "a the", ""])
    assert index.search("anything", k=3)[0].size == 0
    index.save(tmp_path / "kw")
    assert KeywordIndex.load(tmp_path / "kw", count=3).search("anything", k=3)[0].size == 0


def test_save_and_load_give_the_same_results(tmp_path):
    index = KeywordIndex().fit(["a red boat", "a blue heron", "boats in the harbour", "red sky"])
    index.save(tmp_path / "kw")
    loaded = KeywordIndex.load(tmp_path / "kw", count=4)
    for query in ("red", "boat heron", "harbour sky"):
        a, b = index.search(query, k=4), loaded.search(query, k=4)
        assert a[0].tolist() == b[0].tolist() and np.allclose(a[1], b[1])
    with pytest.raises(MetadataFormatError, match="has 4 rows for an index of 5"):
        KeywordIndex.load(tmp_path / "kw", count=5)
    (tmp_path / "kw" / "keywords.json").write_text("{", encoding="utf-8")
    with pytest.raises(MetadataFormatError, match="is missing or damaged"):
        KeywordIndex.load(tmp_path / "kw")


def test_rrf_against_a_hand_computed_example():
    vector = ([10, 20, 30], [0.10, 0.20, 0.30])  # distances, nearest first
    keywords = ([30, 40], [5.0, 2.0])  # BM25 scores, best first
    fused = rrf({"vector": vector, "keywords": keywords}, k=60, weights={"vector": 1.0, "keywords": 0.5})
    assert fused == [
        FusedHit(30, 1 / 63 + 0.5 / 61, {"vector": SourceHit(3, 0.30), "keywords": SourceHit(1, 5.0)}),
        FusedHit(10, 1 / 61, {"vector": SourceHit(1, 0.10)}),
        FusedHit(20, 1 / 62, {"vector": SourceHit(2, 0.20)}),
        FusedHit(40, 0.5 / 62, {"keywords": SourceHit(2, 2.0)}),
    ]


def test_rrf_ties_weights_and_limits():
    tied = rrf({"vector": ([2, 1], [0.1, 0.2]), "keywords": ([1, 2], [3.0, 2.0])})
    assert [h.row for h in tied] == [1, 2]  # equal fused scores and best ranks: the lower row first
    off = rrf({"vector": ([2, 1], [0.1, 0.2]), "keywords": ([7], [3.0])}, weights={"keywords": 0})
    assert [(h.row, list(h.sources)) for h in off] == [(2, ["vector"]), (1, ["vector"])]
    assert len(rrf({"vector": (list(range(10)), [0.0] * 10)}, limit=3)) == 3
    with pytest.raises(ValueError, match="ranking 'vector' has 2 rows and 1 scores"):
        rrf({"vector": ([1, 2], [0.5])})


def test_parse_fusion():
    assert parse_fusion("off") is None
    assert parse_fusion("keywords=0.5") == {"vector": 1.0, "keywords": 0.5}
    assert parse_fusion("vector=2, keywords=0") == {"vector": 2.0, "keywords": 0.0}
    assert parse_fusion("vector=.5,keywords=2.") == {"vector": 0.5, "keywords": 2.0}
    # float() would read these as 10, 1 and 1: only plain ASCII decimals are weights; a long text is not cut short.
    for bad in ("colour=1", "vector=lots", "vector=-1", "vector=1e9", "", "vector=1_0", "vector=\u0661",
                "vector=\uff11", "vector=1" + " " * 100, "keywords=0.5," + "vector=1," * 12):
        with pytest.raises(MetadataError, match=r"^--fusion takes 'off' or weights such as vector=1,keywords=0\.5"):
            parse_fusion(bad)
