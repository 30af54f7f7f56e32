"""Untrusted text on the dashboard (review of issue 11): file names, URL values and error messages reach the
page as text, never as Markdown, links or images, and error messages carry no server path."""

from __future__ import annotations

import re
import shutil
import tracemalloc

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from imgsim.build import build_index
from imgsim.collection import Collection
from imgsim.serving.policy import MAX_EXAMPLES, plain

from .conftest import make_photo, serve
from .test_app import app_env, new_app, results, texts  # noqa: F401  (app_env is a fixture)
from .test_app_clip import clip_env  # noqa: F401  (a fixture)
from .test_app_scale import ann_index_without_files  # noqa: F401  (a fixture)
from .test_app_serving import PAYLOAD, everything

#: A file name (no slash) that renders as a link, bold text and a remote image when taken as Markdown.
HOSTILE = "[log in](https:evil.example) **b** ![t](https:evil.example)"
#: The payloads' Markdown that must not appear unescaped: a link or image, their bold text, an autolink.
#: A folder name (no slash) that Plotly draws as a clickable link in the map's legend.
HOSTILE_FOLDER = '<a href="https:evil.example">Sign in here'
MARKUP = (r"(?<!\\)\]\(", r"(?<!\\)!(?<!\\)\[", r"(?<!\\)\*\*b", r"https?://")


def rendered_markup(text: str) -> list[str]:
    return [m for m in MARKUP if re.search(m, text)]


@pytest.fixture
def hostile_env(monkeypatch, tmp_path, photo_dir, extractor_factory):
    """The photos plus one image whose name is Markdown, indexed; the app serves them."""
    folder = tmp_path / "hostile"
    shutil.copytree(photo_dir, folder)
    make_photo(folder / "reds" / f"{HOSTILE}.jpg", seed=3)  # a near copy of reds/r3.jpg: close neighbours
    make_photo(folder / HOSTILE_FOLDER / "<b>x</b>.jpg", seed=300)
    index_dir = tmp_path / "hostile.imgsim"
    build_index(folder, index_dir, weights="random", model_factory=extractor_factory)
    monkeypatch.setenv("IMGSIM_IMAGES", str(folder))
    monkeypatch.setenv("IMGSIM_INDEX", str(index_dir))
    monkeypatch.setenv("IMGSIM_WEIGHTS", "random")
    monkeypatch.setenv("IMGSIM_CACHE", str(tmp_path / "cache"))
    st.cache_resource.clear()
    st.cache_data.clear()
    return Collection.open(index_dir)


def test_more_like_these_caption_from_a_link_is_plain_text_and_names_only_the_images_used(app_env):
    at = new_app(q=["reds/r0.jpg", PAYLOAD], **{"not": "blues/b1.png"}).run()
    assert not at.exception
    captions = [c.value for c in at.caption if c.value.startswith("more like: ")]
    assert captions == ["more like: reds/r0.jpg · not like: blues/b1.png"]
    assert any(w.value.startswith("Not in this collection, left out: ") for w in at.warning)
    assert not rendered_markup(everything(at)), everything(at)


def test_more_like_these_caption_escapes_indexed_file_names(hostile_env):
    name = f"reds/{HOSTILE}.jpg"
    at = new_app(q=["reds/r0.jpg", name]).run()
    assert not at.exception
    captions = [c.value for c in at.caption if c.value.startswith("more like: ")]
    assert captions == [f"more like: reds/r0.jpg, {plain(name)}"]
    assert not rendered_markup(everything(at)), everything(at)


def image_captions(at) -> list[str]:
    return [img.caption for el in at.get("image") for img in el.proto.imgs if img.caption]


def test_why_panel_names_the_result_as_text(hostile_env):
    name = f"reds/{HOSTILE}.jpg"
    row = hostile_env.paths.index(name)
    at = new_app(q="reds/r3.jpg").run()
    at.button(key=f"more_why_{row}").click().run()
    assert not at.exception
    assert f"**Why is {plain(name)} similar to the query?**" in texts(at)
    assert image_captions(at)[-2:] == ["query", plain(name)]
    assert not rendered_markup(everything(at) + "\n".join(image_captions(at)))


def test_a_long_description_from_a_link_is_plain_text_in_the_truncation_note(clip_env):
    """The note that CLIP read only the beginning quotes that beginning: the URL's ?text=, untrusted."""
    at = new_app(text=PAYLOAD + " and then" * 60).run()
    assert not at.exception
    notes = [i.value for i in at.info if "CLIP reads at most" in i.value]
    assert len(notes) == 1
    assert not rendered_markup(everything(at)), everything(at)


def test_a_local_clip_preset_folder_is_not_named_in_the_text_box_help(clip_env, tmp_path, monkeypatch):
    """An index built from a local preset folder records its server path; the page names the folder only."""
    import json

    ix = tmp_path / "local-preset.imgsim"
    shutil.copytree(clip_env.index.directory, ix)
    meta_path = ix / (ix / "CURRENT").read_text().strip() / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["preset"] = "/srv/models/clip-finetuned"
    meta_path.write_text(json.dumps(meta))
    monkeypatch.setenv("IMGSIM_INDEX", str(ix))
    at = new_app().run()
    assert not at.exception
    help_text = at.text_input(key="text").help
    assert "/srv/models" not in help_text and "clip-finetuned" in help_text
    assert "/srv/models" not in everything(at)


def test_a_local_clip_preset_folder_is_not_named_on_the_about_tab(clip_env, tmp_path, monkeypatch):
    """Its weights label ("CLIP local preset PATH") is recorded in the index too."""
    import json

    ix = tmp_path / "local-preset.imgsim"
    shutil.copytree(clip_env.index.directory, ix)
    meta_path = ix / (ix / "CURRENT").read_text().strip() / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["preset"] = "/srv/models/clip-finetuned"
    meta["weights"]["label"] = "CLIP local preset /srv/models/clip-finetuned"
    meta_path.write_text(json.dumps(meta))
    monkeypatch.setenv("IMGSIM_INDEX", str(ix))
    at = new_app(tab="About this collection").run()
    assert not at.exception
    page = everything(at)
    assert "weights: CLIP local preset clip-finetuned" in page and "/srv/models" not in page


def test_an_indexing_error_quoting_a_folder_name_is_plain_text(monkeypatch, tmp_path, photo_dir):
    """Error messages quote folder and file names (redacted to the names visitors know): they are text too."""
    import imgsim.build
    from imgsim.errors import ImgsimError

    folder = tmp_path / HOSTILE
    shutil.copytree(photo_dir, folder)
    monkeypatch.setenv("IMGSIM_IMAGES", str(folder))
    monkeypatch.delenv("IMGSIM_INDEX", raising=False)
    monkeypatch.setenv("IMGSIM_WEIGHTS", "random")
    monkeypatch.setenv("IMGSIM_CACHE", str(tmp_path / "cache"))
    st.cache_resource.clear()
    st.cache_data.clear()

    def failing_build(src, *args, **kwargs):
        raise ImgsimError(f"Image folder not found: {src}. Check the path (it must be a folder).")

    monkeypatch.setattr(imgsim.build, "build_index", failing_build)
    at = new_app().run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert errors == [f"Image folder not found\\: {plain(HOSTILE)}. Check the path (it must be a folder)."]
    assert str(tmp_path) not in everything(at) and not rendered_markup(everything(at))


def test_an_unexpected_error_shows_neither_its_message_nor_a_server_path(app_env, monkeypatch):
    """The last line of defence: an exception's text may quote any server path (and untrusted names in it)."""
    def broken(self, row, k, where=None):
        raise OSError(5, "Input/output error", f"/srv/private/disk/{HOSTILE}.jpg")

    monkeypatch.setattr(Collection, "neighbors_of_row", broken)
    at = new_app(q="reds/r1.jpg").run()
    assert not at.exception
    assert [e.value for e in at.error] == ["Something went wrong (OSError). The details are in the server log."]
    assert "/srv/private" not in everything(at) and not rendered_markup(everything(at))


def test_a_missing_weights_file_is_not_named_by_its_server_path(monkeypatch, tmp_path, photo_dir):
    """IMGSIM_WEIGHTS=PATH stays on the server (the sidebar says "a local weights file"): its errors too."""
    weights = tmp_path / "operator-secrets" / "resnet50.h5"
    monkeypatch.setenv("IMGSIM_IMAGES", str(photo_dir))
    monkeypatch.delenv("IMGSIM_INDEX", raising=False)
    monkeypatch.setenv("IMGSIM_WEIGHTS", str(weights))
    monkeypatch.setenv("IMGSIM_CACHE", str(tmp_path / "cache"))
    st.cache_resource.clear()
    st.cache_data.clear()
    at = new_app().run()
    assert not at.exception
    assert at.error and at.error[0].value.startswith("**The model's weights cannot be loaded.** Weights file not found")
    assert "operator-secrets" not in everything(at)


def test_the_weights_file_an_index_records_is_not_named_by_its_server_path(app_env, monkeypatch, tmp_path):
    """An upload loads the weights the index was built with; a file that has gone is not named by its path."""
    import json

    ix = tmp_path / "file-weights.imgsim"
    shutil.copytree(app_env.index.directory, ix)
    meta_path = ix / (ix / "CURRENT").read_text().strip() / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["weights"] = {"mode": "file", "identity": "sha256:0", "label": "file resnet50.h5",
                       "path": str(tmp_path / "operator-secrets" / "resnet50.h5"), "seed": None}
    meta_path.write_text(json.dumps(meta))
    monkeypatch.setenv("IMGSIM_INDEX", str(ix))
    monkeypatch.setenv("IMGSIM_WEIGHTS", "imagenet")
    at = new_app().run()
    at.file_uploader[0].set_value(("u.jpg", make_photo(tmp_path / "u.jpg", seed=99).read_bytes(), "image/jpeg")).run()
    assert not at.exception
    assert at.error and at.error[0].value.startswith("**The model's weights cannot be loaded.** Weights file not found")
    assert "operator-secrets" not in everything(at)


def test_plotly_maps_show_folder_and_file_names_as_text(hostile_env):
    """Plotly reads trace names and hover text as its HTML subset: a folder name became a link in the legend."""
    import html
    import json

    at = new_app(q="reds/r3.jpg").run()
    assert not at.exception
    base = json.loads(json.loads(at.get("bidi_component")[0].proto.json)["base"])
    names = {t.get("name") for t in base["data"]}
    assert html.escape(HOSTILE_FOLDER, quote=False) in names and HOSTILE_FOLDER not in names
    at = new_app(tab="Clusters").run()
    assert not at.exception
    hover = [text for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"] for text in t.get("text", [])]
    assert html.escape(f"{HOSTILE_FOLDER}/<b>x</b>.jpg", quote=False) in hover
    assert not [t for t in hover if "<" in t]


def test_results_of_an_approximate_index_say_so(ann_index_without_files):
    """'8 nearest images' is a claim that only exact search makes: an ANN index's results say they are approximate."""
    at = new_app(q="g1/p03.jpg").run()
    assert not at.exception
    [note] = [c.value for c in at.caption if c.value.startswith("Found by approximate search")]
    assert "recall@10" in note and "The distances are exact." in note


def test_results_of_an_exact_index_are_not_called_approximate(app_env):
    at = new_app(q="reds/r1.jpg").run()
    assert not at.exception and "approximate" not in texts(at)


def test_csv_of_every_image_is_made_when_asked_not_on_every_rerun(app_env, monkeypatch):
    """The clusters and duplicate-groups CSVs list every image: a rerun of their tab must not build them."""
    from imgsim.serving import export

    made = []
    for name in ("clusters_csv", "groups_csv"):
        real = getattr(export, name)
        monkeypatch.setattr(export, name, lambda *a, _real=real, _name=name: made.append(_name) or _real(*a))
    at = new_app(tab="Clusters").run()
    at.run()
    assert not at.exception
    assert any(el.proto.label == "Download clusters as CSV" for el in at.get("download_button"))
    at = new_app(tab="Duplicates", t="0.9").run()
    at.run()
    assert not at.exception
    assert any(el.proto.label == "Download groups as CSV" for el in at.get("download_button"))
    assert made == []


def test_why_on_an_upload_decodes_it_with_the_bounded_upload_decoder_once(app_env, monkeypatch, random_extractor,
                                                                         tmp_path):
    """Uploads are decoded with bounded memory (decode.open_upload); Why? decoded them again, unbounded, on
    every rerun while the panel was open."""
    import imgsim.models.base
    from imgsim import decode

    monkeypatch.setattr(imgsim.models.base, "make_backbone", lambda *a, **k: random_extractor)
    data = make_photo(tmp_path / "u.jpg", seed=77).read_bytes()
    unbounded, bounded = [], []
    real_model_input, real_upload_input = decode.model_input, decode.upload_model_input
    monkeypatch.setattr(decode, "model_input", lambda d, *a, **k: unbounded.append(d == data) or
                        real_model_input(d, *a, **k))
    monkeypatch.setattr(decode, "upload_model_input", lambda d, *a, **k: bounded.append(d == data) or
                        real_upload_input(d, *a, **k))
    real_embed = Collection.embed_bytes
    decoders = []

    def spying_embed(self, d, extractor=None, decoder=None):
        decoders.append(decoder)
        return real_embed(self, d, extractor, decoder) if decoder else real_embed(self, d, extractor)

    monkeypatch.setattr(Collection, "embed_bytes", spying_embed)
    at = new_app().run()
    at.file_uploader[0].set_value(("u.jpg", data, "image/jpeg")).run()
    [why, *_] = [b for b in at.button if b.key and b.key.startswith("more_why_")]
    why.click().run()
    for _ in range(3):
        at.run()
    assert not at.exception and "similar to the query?" in texts(at)
    assert True not in unbounded
    assert None not in decoders
    assert bounded.count(True) <= 3  # the upload's vector, its explanation, its 224x224 view: once each


def test_the_map_stars_the_images_of_the_query_shown_not_an_earlier_one(clip_env):
    """A description is the query (its results are listed): the map must not star 'more like these' images
    that the results are not about."""
    import json

    at = new_app(q=["reds/r0.jpg", "reds/r3.jpg"], text="a red square").run()
    assert not at.exception
    assert any(m.value.startswith("**Described:**") for m in at.markdown)
    overlay = json.loads(json.loads(at.get("bidi_component")[0].proto.json)["overlay"])
    assert not [t for t in overlay["data"] if t.get("name") == "query"]


def test_a_click_after_a_re_index_acts_on_the_image_that_was_shown(tmp_path, photo_dir, extractor_factory,
                                                                  monkeypatch):
    """Buttons are keyed by row; after a re-index the same row is another image, and a click rendered before
    it must still act on the image the visitor saw."""
    folder = tmp_path / "live"
    shutil.copytree(photo_dir, folder)
    index_dir = tmp_path / "live.imgsim"
    build_index(folder, index_dir, weights="random", model_factory=extractor_factory)
    monkeypatch.setenv("IMGSIM_IMAGES", str(folder))
    monkeypatch.setenv("IMGSIM_INDEX", str(index_dir))
    monkeypatch.setenv("IMGSIM_WEIGHTS", "random")
    monkeypatch.setenv("IMGSIM_CACHE", str(tmp_path / "cache"))
    st.cache_resource.clear()
    st.cache_data.clear()
    at = new_app(q="blues/b2.png").run()
    before = Collection.open(index_dir)
    picked = before.paths.index("blues/b4.png")
    (folder / "blues" / "b0.png").unlink()  # rows after it move up
    build_index(folder, index_dir, model_factory=extractor_factory)
    assert Collection.open(index_dir).paths[picked] != "blues/b4.png"
    at.button(key=f"pick_{picked}").click().run()
    assert not at.exception
    assert at.query_params["q"] in ("blues/b4.png", ["blues/b4.png"])
    assert any(c.value == "query: blues/b4.png" for c in at.caption)
    after = Collection.open(index_dir)
    row = after.paths.index("blues/b4.png")
    gone = after.paths.index("blues/b1.png")
    target = next(n for n in after.neighbors_of_row(row, 8).neighbors[1:] if n.row > gone)  # it will move up
    (folder / "blues" / "b1.png").unlink()
    build_index(folder, index_dir, model_factory=extractor_factory)
    at.button(key=f"more_{target.row}").click().run()
    assert not at.exception
    assert at.query_params["q"] in (target.path, [target.path])


def test_skipped_symlinks_do_not_show_their_server_targets_on_the_about_tab(monkeypatch, tmp_path, photo_dir,
                                                                          extractor_factory):
    outside = tmp_path / "private-area"
    make_photo(outside / "secret.jpg", seed=9)
    folder = tmp_path / "served"
    shutil.copytree(photo_dir, folder)
    (folder / "leak.jpg").symlink_to(outside / "secret.jpg")
    (folder / "gone.jpg").symlink_to(tmp_path / "private-gone" / "x.jpg")
    index_dir = tmp_path / "served.imgsim"
    build_index(folder, index_dir, weights="random", model_factory=extractor_factory)
    serve(monkeypatch, tmp_path, index_dir, folder)
    at = new_app(tab="About this collection").run()
    assert not at.exception
    table = [d.value for d in at.dataframe if "file" in d.value.columns][0]
    rows = {r["file"]: (r["reason"], r["detail"]) for r in table.to_dict("records")}
    assert rows["leak.jpg"] == ("symlink leads outside the folder", "(target not shown)")
    assert rows["gone.jpg"] == ("dangling symlink", "(target not shown)")
    assert "private-" not in table.to_string() and str(tmp_path) not in table.to_string()


def test_an_index_built_from_another_folder_is_refused_without_naming_that_folder(monkeypatch, tmp_path,
                                                                                 extractor_factory):
    """An operator pointed the app at an index of another folder: updating it is refused, and the refusal
    quotes neither server path."""
    import time

    import imgsim.models.base
    import imgsim.models.resnet50
    from imgsim.store.generations import load_index

    first, second = tmp_path / "private-first", tmp_path / "served"
    for i in range(3):
        make_photo(first / f"a{i}.jpg", seed=800 + i)
        make_photo(second / f"b{i}.jpg", seed=900 + i)
    index_dir = tmp_path / "shared.imgsim"
    from imgsim.models.weights import Weights
    build_index(first, index_dir, weights="random", model_factory=extractor_factory)
    monkeypatch.setattr(imgsim.models.base, "make_backbone", lambda *a, **k: extractor_factory(
        Weights.parse("random"), "flatten", 8))
    serve(monkeypatch, tmp_path, index_dir, second, ALLOW_INDEXING="1")
    at = new_app().run()
    [b for b in at.button if b.label == "Update index"][0].click().run()
    for _ in range(60):
        at.run()
        if at.error:
            break
        time.sleep(0.5)
    errors = [e.value for e in at.error]
    assert errors and "was built from" in errors[0], errors
    page = everything(at) + "\n".join(errors)
    assert "private-first" not in page and "pytest-of" not in page  # (the page escapes _ in paths)
    assert "(the folder this index was built from)" in errors[0]
    assert load_index(index_dir).root == first.resolve()


def test_a_link_repeating_q_a_thousand_times_costs_what_one_q_costs_and_long_lists_are_cut(app_env):
    """A 13 KB link with the same ?q= 1,000 times once stacked 999 vectors (and copied them as float64)."""
    def peak(**params) -> tuple[AppTest, int]:
        at = new_app(**params)
        tracemalloc.start()
        try:
            at.run()
            return at, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    new_app(q="reds/r0.jpg").run()  # the collection and its caches, loaded once
    _, one = peak(q=["reds/r0.jpg", "reds/r1.jpg"])
    at, many = peak(q=["reds/r0.jpg", "reds/r1.jpg"] * 500)
    vector = app_env.index.vectors.shape[1] * 8
    assert not at.exception
    assert many - one < 10 * vector, (many - one) / vector  # was ~830 vectors' worth
    assert at.query_params["q"] == ["reds/r0.jpg", "reds/r1.jpg"]  # the URL says what is used
    assert any(c.value == "more like: reds/r0.jpg, reds/r1.jpg" for c in at.caption)
    # More names than a query uses (Streamlit ignores a link of over 1,000 values): the first MAX_EXAMPLES,
    # said so; the lists and the URL hold those.
    names = app_env.paths + [f"gone/{i}.jpg" for i in range(900 - app_env.count)]
    long = new_app(q=names, **{"not": [f"away/{i}.jpg" for i in range(60)]}).run()
    assert not long.exception
    assert (f"More like these uses at most {MAX_EXAMPLES} images to look like and {MAX_EXAMPLES} to avoid: of 900 "
            f"images to look like and 60 images to avoid, the first {MAX_EXAMPLES} are used."
            ) in [i.value for i in long.info]
    assert long.query_params["q"] == names[:MAX_EXAMPLES] and len(long.query_params["not"]) == MAX_EXAMPLES
    assert long.multiselect(key="ml_pos_0").value == app_env.paths


def test_link_values_the_page_cannot_use_are_said_not_dropped(app_env):
    """?k=500 once became 8 silently, ?tab=Nope vanished, ?text= on an image-only index did nothing."""
    big = new_app(k="500").run()
    assert not big.exception
    assert "The link asks for k = 500 results; k is 1 to 50 here: showing 50." in [i.value for i in big.info]
    assert big.slider(key="k").value == 50 and big.slider(key="k").max == 50
    assert len(results(big)) == app_env.count  # 50 asked of a 12-image collection: all of them
    nope = new_app(tab="No*pe").run()
    assert not nope.exception
    assert ("The link's tab (No\\*pe) is not one of this page's tabs: Search, Map, Clusters, Duplicates, "
            "Odd ones out, About this collection.") in [i.value for i in nope.info]
    tiger = new_app(text="a **tiger**").run()
    assert not tiger.exception
    warning = next(w.value for w in tiger.warning if "cannot search by text" in w.value)
    assert warning.startswith("The link asks to search for “a \\*\\*tiger\\*\\*”, but this index cannot search by text. "
                              "Text search needs a CLIP index")
    assert "\\-\\-backbone clip" in warning or "--backbone clip" in warning
    # the folder the index was built from, by the name visitors know it by (not SRC_DIR, not its server path)
    folder = app_env.index.root
    assert plain(f"python -m imgsim index {folder.name} --index CLIP_INDEX_DIR --backbone clip") in warning
    assert str(folder) not in warning and plain(str(folder)) not in warning
