"""The Search tab's "Rank descriptions by" setting, driven headlessly with AppTest: on a CLIP index whose images
have captions it ranks a description as ``query --text --fusion`` does with the same weights (CLIP and BM25 fused,
either alone), says the weights it used, lives in ``?fusion=`` (untrusted there) and is absent where nothing is
fused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from dashboard.components.fusion import CHOICES, spelled
from imgsim.cli import main
from imgsim.collection import Collection
from imgsim.metadata.fields import MetadataError
from imgsim.metadata.fusion import parse_fusion
from imgsim.serving.policy import plain

from .conftest import serve
from .test_app import new_app, texts
from .test_app_metadata import card_scores, clip_captioned, col, meta_index, result_rows  # noqa: F401 (fixtures)

TEXT = "a tram"
FUSED = ("Ranked by reciprocal rank fusion (k = 60; weights {}) of the model's ranking and BM25 over the images' "
         "captions and keywords: each card says its rank in each.")
CLIP_ALONE = ("Ranked by CLIP's ranking alone (fusion off): the images' captions and keywords are not searched.")
BM25_ALONE = ("Ranked by BM25 alone over the images' captions and keywords (vector 0): only images with a word of the "
              "description are listed. The distances are to CLIP's reading of it.")
#: ?fusion= -> the setting's label and the caption that says how the results were ranked.
SETTINGS = {None: ("picture and words equally", FUSED.format("vector 1, keywords 1")),
            "off": ("the picture only", CLIP_ALONE),
            "vector=1,keywords=0.5": ("mostly the picture", FUSED.format("vector 1, keywords 0.5")),
            "vector=0,keywords=1": ("the words only", BM25_ALONE)}


@pytest.fixture
def clip(monkeypatch, tmp_path, photo_dir, clip_captioned, random_clip) -> Collection:
    """The page and the CLI on the captioned CLIP index, both with the seeded random CLIP model."""
    import imgsim.collection
    import imgsim.models.base

    for module in (imgsim.models.base, imgsim.collection):
        monkeypatch.setattr(module, "make_backbone", lambda *args, **kwargs: random_clip)
    serve(monkeypatch, tmp_path, clip_captioned, photo_dir)
    return Collection.open(clip_captioned)


def page_paths(at: AppTest, col: Collection) -> list[str]:
    """The result cards' paths, in order."""
    return [col.paths[r] for r in result_rows(at)]


def cli_paths(capsys, index: Path, *args: str) -> list[str]:
    """What ``query INDEX --text TEXT -k 6 ARGS --json`` answers, in order."""
    capsys.readouterr()
    assert main(["query", str(index), "--text", TEXT, "-k", "6", *args, "--json"]) == 0
    return [n["path"] for n in json.loads(capsys.readouterr().out)["neighbors"]]


def test_each_setting_ranks_as_query_text_fusion_does_with_the_same_weights(capsys, clip, clip_captioned,
                                                                          random_clip):
    orders = {}
    for asked, (label, caption) in SETTINGS.items():
        at = new_app(text=TEXT, k="6", **({"fusion": asked} if asked else {})).run()
        assert not at.exception and not at.error
        setting = at.select_slider(key="fusion")
        assert setting.label == "Rank descriptions by" and setting.value == (asked or "vector=1,keywords=1")
        assert setting.format_func(setting.value) == label
        expected, _ = clip.query_text(TEXT, 6, model=lambda: random_clip,
                                      fusion=parse_fusion(asked or "vector=1,keywords=1"))
        orders[asked] = page_paths(at, clip)
        assert orders[asked] == [n.path for n in expected.neighbors]
        assert orders[asked] == cli_paths(capsys, clip_captioned, *(["--fusion", asked] if asked else []))
        assert caption in texts(at)
        if asked == "vector=0,keywords=1":  # no vector ranking was asked: the cards do not name one
            assert card_scores(at) == [f":small[keywords #{n.scores['keywords'].rank} "
                                       f"({n.scores['keywords'].score:.2f})]" for n in expected.neighbors]
        assert [c for c in (FUSED.format(""), CLIP_ALONE, BM25_ALONE) if c[:40] in texts(at)] == [
            c for c in (FUSED.format(""), CLIP_ALONE, BM25_ALONE) if c[:40] == caption[:40]]  # that one only
    # The settings change the answer: the captions lift the two trams, CLIP alone (random weights) does not.
    assert orders[None] != orders["off"] and orders["vector=1,keywords=0.5"] != orders["off"]
    assert sorted(orders["vector=0,keywords=1"]) == ["blues/b1.png", "reds/r3.jpg"]  # the captions with "tram"
    assert orders["off"][:2] != orders["vector=0,keywords=1"]
    at = new_app(text=TEXT, k="6", fusion="vector=0,keywords=1").run()
    assert "**2 best matches** (k = 6)." in texts(at)


def test_the_setting_writes_the_url_and_a_link_draws_it_again(clip):
    at = new_app(text=TEXT, k="6").run()
    assert "fusion" not in at.query_params  # the default is not spelled out
    fused = page_paths(at, clip)
    at.select_slider(key="fusion").set_value("off").run()
    assert at.query_params["fusion"] == "off" and not at.exception
    alone = page_paths(at, clip)
    assert alone != fused and CLIP_ALONE in texts(at)
    again = new_app(text=TEXT, k="6", fusion=at.query_params["fusion"]).run()
    assert again.select_slider(key="fusion").value == "off" and page_paths(again, clip) == alone
    again.select_slider(key="fusion").set_value("vector=1,keywords=1").run()
    assert "fusion" not in again.query_params and page_paths(again, clip) == fused


def test_a_links_weights_that_are_no_choice_become_one_in_their_place(capsys, clip, clip_captioned, random_clip):
    at = new_app(text=TEXT, k="6", fusion=" vector = 3 , keywords=0.25").run()
    assert not at.exception and not at.error and not at.info
    setting = at.select_slider(key="fusion")
    assert setting.value == "vector=3,keywords=0.25" and at.query_params["fusion"] == "vector=3,keywords=0.25"
    assert setting.options == ["the picture only", "vector 3, keywords 0.25 (the link's weights)",
                               "mostly the picture", "picture and words equally", "mostly the words",
                               "the words only"]  # by the words' share
    assert setting.format_func(setting.value) == "vector 3, keywords 0.25 (the link's weights)"
    assert FUSED.format("vector 3, keywords 0.25") in texts(at)
    assert page_paths(at, clip) == cli_paths(capsys, clip_captioned, "--fusion", "vector=3,keywords=0.25")
    # Weights that rank alike are one setting: keywords 0 is CLIP alone, vector 0 BM25 alone.
    assert new_app(text=TEXT, fusion="keywords=0").run().select_slider(key="fusion").value == "off"
    assert new_app(text=TEXT, fusion="vector=0,keywords=7").run().select_slider(key="fusion").value == (
        "vector=0,keywords=1")


@pytest.mark.parametrize("hostile", ["**bold** [x](http://evil.example)", "<img src=x onerror=alert(1)>",
                                     "vector=1e9", ""])
def test_a_fusion_value_that_cannot_be_used_is_said_as_text_and_the_default_ranks(clip, random_clip, hostile):
    at = new_app(text=TEXT, k="6", fusion=hostile).run()
    assert not at.exception and not at.error
    with pytest.raises(MetadataError) as refused:
        parse_fusion(hostile)
    assert [i.value for i in at.info] == [f"The link's ranking setting cannot be used ({plain(str(refused.value), 300)}"
                                          "): ranking descriptions by picture and words equally."]
    assert at.select_slider(key="fusion").value == "vector=1,keywords=1" and "fusion" not in at.query_params
    expected, _ = clip.query_text(TEXT, 6, model=lambda: random_clip)
    assert page_paths(at, clip) == [n.path for n in expected.neighbors]
    assert FUSED.format("vector 1, keywords 1") in texts(at)
    assert "<img" not in "".join(i.value for i in at.info).replace("\\<img", "")  # escaped: shown, not drawn


def test_the_setting_is_absent_where_nothing_is_fused(monkeypatch, tmp_path, photo_dir, clip_index, random_clip,
                                                      col):
    # An image-only index with captions (BM25 alone): no setting, and a link's ?fusion= changes nothing.
    at = new_app(text="heron", fusion="off").run()
    assert not at.exception and not at.error and not at.select_slider
    assert result_rows(at) == [n.row for n in col.search_keywords("heron", 8).neighbors]
    # A CLIP index whose images have no text: CLIP alone, no setting either.
    import imgsim.models.base

    monkeypatch.setattr(imgsim.models.base, "make_backbone", lambda *args, **kwargs: random_clip)
    serve(monkeypatch, tmp_path, clip_index, photo_dir)
    bare = Collection.open(clip_index)
    assert bare.supports_text and not bare.has_text_metadata
    at = new_app(text=TEXT, k="6", fusion="vector=0,keywords=1").run()
    assert not at.exception and not at.error and not at.select_slider
    expected, _ = bare.query_text(TEXT, 6, model=lambda: random_clip)
    assert page_paths(at, bare) == [n.path for n in expected.neighbors]
    assert "Ranked by" not in texts(at)


def test_spelled_gives_weights_that_rank_alike_one_spelling():
    assert spelled(None) == spelled({"vector": 2.0, "keywords": 0.0}) == "off"
    assert spelled({"vector": 0.0, "keywords": 0.3}) == "vector=0,keywords=1"
    assert spelled({"vector": 1.0, "keywords": 0.1 + 0.2}) == "vector=1,keywords=0.30000000000000004"
    assert parse_fusion(spelled({"vector": 1.0, "keywords": 0.1 + 0.2})) == {"vector": 1.0, "keywords": 0.1 + 0.2}
    assert all(spelled(parse_fusion(s)) == s for s in CHOICES)


def test_the_words_only_claim_no_approximate_nearest_search_and_the_box_says_the_ranking_it_is_set_to(
        monkeypatch, tmp_path, photo_dir, random_clip):
    from imgsim.build import build_index

    sidecar = tmp_path / "captions.csv"
    sidecar.write_text("path,caption\nreds/r3.jpg,a red tram in the rain\nblues/b1.png,a blue tram at night\n",
                       encoding="utf-8")
    index = tmp_path / "ann.imgsim"
    build_index(photo_dir, index, weights="random", backbone="clip", metadata=sidecar, search="ann",
                model_factory=lambda w, p, b: random_clip)
    import imgsim.models.base

    monkeypatch.setattr(imgsim.models.base, "make_backbone", lambda *args, **kwargs: random_clip)
    serve(monkeypatch, tmp_path, index, photo_dir)
    assert Collection.open(index).search_method == "ann"
    approximate = "Found by approximate search"
    from dashboard.messages import model_shown

    model = f"Search by text with this index's {model_shown(Collection.open(index))} model"
    helps = {"vector=1,keywords=1": f"{model}, its ranking fused with BM25 over the images' captions and keywords",
             "off": f"{model} alone (Rank descriptions by: the picture only)",
             "vector=0,keywords=1": f"{model}: the images are ranked by BM25 over their captions and keywords alone "
                                    "(Rank descriptions by: the words only)"}
    at = new_app(text=TEXT, k="6", fusion="vector=0,keywords=1").run()  # BM25 alone: no nearest-neighbour search
    assert not at.exception and BM25_ALONE in texts(at) and approximate not in texts(at)
    assert at.text_input(key="text").help == helps["vector=0,keywords=1"] + "; press Enter."
    for spelling in ("off", "vector=1,keywords=1"):  # CLIP's approximate ranking alone or in the fused one: said
        at.select_slider(key="fusion").set_value(spelling).run()
        assert not at.exception and approximate in texts(at)
        assert at.text_input(key="text").help == helps[spelling] + "; press Enter."
        assert at.text_input(key="text").value == TEXT  # the box keeps the description as its help changes
