"""The dashboard's exploration views, driven headlessly with AppTest: first view, Why?, more like these,
clusters, odd ones out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

import imgsim.models.base
from imgsim.serving import export
from imgsim.collection import Collection

from .conftest import make_photo

from .test_app import app_env, new_app, results, texts  # noqa: F401  (app_env is a fixture)


def breaks(name: str) -> str:
    """A file name as a thumbnail caption shows it: a zero-width space after each '/', '_', '-' and '.' (these
    names have no '.' before a digit), where a narrow column may wrap it."""
    return re.sub(r"([/_.-])", "\\1\u200b", name)


def test_first_view_is_already_answered_with_the_most_central_image(app_env):
    at = new_app().run()
    assert not at.exception
    central = app_env.central_row()
    found = results(at)
    assert [r for r, _, _ in found] == list(range(1, 9))
    assert any(c.value == f"query: {app_env.paths[central]}" for c in at.caption)
    assert [i.value for i in at.info] == [
        f"An example to start with: the images nearest to {app_env.paths[central]}. "
        "Pick an image above, upload one, or click a point on the map."]
    expected = app_env.neighbors_of_row(central, 8)
    assert [d for _, d, _ in found] == [round(n.distance, 3) for n in expected.neighbors]


def test_why_shows_the_cells_and_their_share(app_env):
    at = new_app(q="reds/r0.jpg").run()
    query = app_env.paths.index("reds/r0.jpg")
    second = app_env.neighbors_of_row(query, 8).neighbors[1]
    at.button(key=f"more_why_{second.row}").click().run()
    assert not at.exception
    page = texts(at)
    assert f"**Why is {second.path} similar to the query?**" in page
    e = app_env.explain(query, second.row)
    assert e.describe() in page and "The 49 parts add up to the cosine exactly." in page
    assert abs(float(e.cells.sum()) - second.similarity) < 1e-5
    at.button(key="why_close").click().run()
    assert "similar to the query?" not in texts(at)


def test_more_like_these_from_the_url(app_env):
    at = new_app(q=["reds/r0.jpg", "reds/r3.jpg"], **{"not": "blues/b1.png"}).run()
    assert not at.exception
    assert any(c.value == "more like: reds/r0.jpg, reds/r3.jpg · not like: blues/b1.png" for c in at.caption)
    rows = [app_env.paths.index(p) for p in ("reds/r0.jpg", "reds/r3.jpg", "blues/b1.png")]
    expected = app_env.query_examples([(rows[0], None), (rows[1], None)], [(rows[2], None)], 8)
    assert [d for _, d, _ in results(at)] == [round(n.distance, 3) for n in expected.neighbors]


def test_thumbs_up_and_down_build_a_more_like_these_query(app_env):
    at = new_app(q="blues/b0.png").run()
    query = app_env.paths.index("blues/b0.png")
    neighbours = app_env.neighbors_of_row(query, 8).neighbors
    up, down = neighbours[1], neighbours[2]
    at.button(key=f"more_pos_{up.row}").click().run()
    assert not at.exception
    assert at.query_params["q"] == ["blues/b0.png", up.path]
    at.button(key=f"more_neg_{down.row}").click().run()
    assert not at.exception
    assert at.query_params["not"] in (down.path, [down.path])
    assert any(c.value == f"more like: blues/b0.png, {up.path} · not like: {down.path}" for c in at.caption)
    expected = app_env.query_examples([(query, None), (up.row, None)], [(down.row, None)], 8)
    assert [d for _, d, _ in results(at)] == [round(n.distance, 3) for n in expected.neighbors]
    # choosing one image again is a plain query
    at.button(key="ml_clear").click().run()
    assert any(c.value == "query: blues/b0.png" for c in at.caption)
    assert "not" not in at.query_params


def test_lasso_selection_becomes_a_more_like_these_query(app_env):
    at = new_app(tab="Map").run()
    at.session_state["full_map"] = {"selection": [0, 2]}
    at.run()
    at.button(key="lasso_more_like").click().run()
    assert not at.exception
    assert at.query_params["q"] == [app_env.paths[0], app_env.paths[2]]


def test_clusters_view_lists_clusters_opens_one_and_exports_csv(app_env):
    at = new_app(tab="Clusters").run()
    assert not at.exception, at.exception
    suggestion = app_env.suggest_k()
    assert at.number_input(key="ck").value == suggestion.k
    at.number_input(key="ck").set_value(3).run()
    assert int(at.metric[0].value) == 3
    model = app_env.clusters(3)
    heads = [m.value for m in at.markdown if m.value.startswith("**Cluster ")]
    assert heads == [f"**Cluster {c + 1}** · {int(model.sizes_[c])} images" for c in range(3)]
    assert sum(int(h.split("· ")[1].split()[0]) for h in heads) == app_env.count
    assert any(el.proto.label == "Download clusters as CSV" for el in at.get("download_button"))
    csv = export.clusters_csv(app_env.paths, model.labels_, model.distances_).splitlines()
    assert csv[0] == "path,cluster,distance_to_centre" and len(csv) == app_env.count + 1
    at.button(key="cluster_0").click().run()
    assert not at.exception
    assert any(h.value.startswith(f"Cluster 1 · {int(model.sizes_[0])} images") for h in at.subheader)
    shown = [c.value.split(" · ")[0] for c in at.caption if " · " in c.value]
    assert shown == [breaks(app_env.paths[r]) for r in model.members(0)]


def test_odd_ones_out_view_ranks_and_exports(app_env):
    at = new_app(tab="Odd ones out").run()
    assert not at.exception
    found = app_env.outliers(min(24, app_env.count))
    captions = [c.value for c in at.caption if c.value.startswith("#")]
    assert captions[0] == (f"#1 {breaks(app_env.paths[found[0].row])} · mean {found[0].score:.3f} · "
                           f"nearest {found[0].nearest:.3f}")
    assert len(captions) == len(found)
    assert any(el.proto.label == "Download as CSV" for el in at.get("download_button"))
    at.slider(key="odd_n").set_value(3).run()
    assert len([c for c in at.caption if c.value.startswith("#")]) == 3
    assert np.all(np.diff([o.score for o in found]) <= 0)


@pytest.fixture(scope="module")
def avg_index(tmp_path_factory, extractor_factory):
    """A small index built with avg pooling (its explanations need the model)."""
    from imgsim.build import build_index

    root = tmp_path_factory.mktemp("avgphotos")
    for i in range(5):
        make_photo(root / f"p{i}.jpg", seed=700 + i)
    index_dir = tmp_path_factory.mktemp("avgindex") / "avg.imgsim"
    build_index(root, index_dir, weights="random", pooling="avg", model_factory=extractor_factory)
    return root, index_dir


def test_why_in_avg_mode_loads_the_model_and_matches_cells(app_env, avg_index, extractor_factory, monkeypatch):
    from imgsim.models.weights import Weights

    root, index_dir = avg_index
    model = extractor_factory(Weights.parse("random"), "avg", 8)
    builds = []

    def counting_model(spec, weights, pooling="flatten", batch_size=16, **options):
        builds.append(pooling)
        return model

    monkeypatch.setattr(imgsim.models.base, "make_backbone", counting_model)
    monkeypatch.setenv("IMGSIM_INDEX", str(index_dir))
    monkeypatch.setenv("IMGSIM_IMAGES", str(root))
    col = Collection.open(index_dir)
    at = new_app(q="p0.jpg").run()
    assert not at.exception and builds == []  # browsing an avg index needs no model
    second = col.neighbors_of_row(0, 8).neighbors[1]
    at.button(key=f"more_why_{second.row}").click().run()
    assert not at.exception, at.exception
    assert builds == ["avg"]
    page = texts(at)
    assert "Each cell of the first image is matched with its most similar cell of the second" in page
    assert "how well each cell of the query matches its best cell in the result" in page


def _chart_configs(at) -> list[dict]:
    """The Plotly.js config of every chart on the page: st.plotly_chart's and the map component's."""
    configs = [json.loads(el.proto.config) for el in at.get("plotly_chart")]
    configs += [json.loads(el.proto.json)["config"] for el in at.get("bidi_component")
                if el.proto.component_name == "imgsim_map" and "config" in json.loads(el.proto.json)]
    return configs


def test_no_chart_offers_a_button_that_talks_to_an_outside_service(app_env):
    """Plotly.js 3's mode bar shows "Share chart…" (an upload to Plotly Cloud) unless told not to."""
    seen = 0
    for tab in ("Search", "Map", "Clusters", "Duplicates"):
        at = new_app(tab=tab).run()
        assert not at.exception
        for config in _chart_configs(at):
            seen += 1
            assert config["showSendToCloud"] is False and config["plotlyServerURL"] == "", (tab, config)
            assert config["displaylogo"] is False and config.get("showLink") is not True, (tab, config)
            assert {"sendChartToCloud", "sendDataToCloud"} <= set(config["modeBarButtonsToRemove"]), (tab, config)
    assert seen >= 4  # the search map, the full map, the clusters' map, the duplicates' histogram
    # The map component draws with the config it is given, none of its own.
    assert "Plotly.react(plot, base.data.concat(JSON.parse(data.overlay).data || []), base.layout, data.config)" in (
        Path(__file__).resolve().parents[1] / "static" / "imgsim_map.js").read_text()


def _look_like(at) -> tuple[list[str], list[str]]:
    """The more-like-these picker's two lists as shown."""
    shown = {m.label: list(m.value) for m in at.multiselect}
    return shown["Look like"], shown["Not like"]


def test_more_like_these_is_one_state_in_the_url_the_caption_and_the_lists(app_env):
    """👍 fills the lists; a lasso opens the results; Back to one image clears them; 👍/👎 and Search with these
    start from what is shown, never an earlier selection."""
    at = new_app(q="blues/b0.png").run()
    up = app_env.neighbors_of_row(app_env.paths.index("blues/b0.png"), 8).neighbors[1]
    at.button(key=f"more_pos_{up.row}").click().run()
    assert not at.exception
    assert at.query_params["q"] == ["blues/b0.png", up.path] and _look_like(at) == (["blues/b0.png", up.path], [])
    # A lasso on the Map tab: More like these opens the Search tab with its answer.
    lasso = new_app(tab="Map").run()
    lasso.session_state["full_map"] = {"selection": [0, 2, 5]}
    lasso.run()
    lasso.button(key="lasso_more_like").click().run()
    selected = [app_env.paths[r] for r in (0, 2, 5)]
    assert not lasso.exception
    assert lasso.session_state["tab"] == "Search"
    assert any(c.value == "more like: " + ", ".join(selected) for c in lasso.caption)
    assert lasso.query_params["q"] == selected and _look_like(lasso) == (selected, [])
    # Back to one image: the lists are empty again.
    lasso.button(key="ml_clear").click().run()
    assert any(c.value == f"query: {selected[0]}" for c in lasso.caption)
    assert lasso.query_params["q"] == selected[0] and _look_like(lasso) == ([], [])
    # 👍 then starts from that one image, and Search with these searches with what the lists show.
    other = next(n for n in app_env.neighbors_of_row(0, 8).neighbors if n.path not in selected)
    lasso.button(key=f"more_pos_{other.row}").click().run()
    assert lasso.query_params["q"] == [selected[0], other.path]
    assert _look_like(lasso) == ([selected[0], other.path], [])
    lasso.button(key="ml_go").click().run()
    assert not lasso.exception
    assert lasso.query_params["q"] == [selected[0], other.path]
    assert any(c.value == f"more like: {selected[0]}, {other.path}" for c in lasso.caption)


def test_an_upload_takes_the_image_out_of_the_link_and_says_it_cannot_be_shared(app_env, random_extractor,
                                                                                 monkeypatch, tmp_path):
    monkeypatch.setattr(imgsim.models.base, "make_backbone", lambda *a, **kw: random_extractor)
    at = new_app(q="reds/r0.jpg").run()
    assert at.query_params["q"] == "reds/r0.jpg"
    photo = make_photo(tmp_path / "mine.jpg", seed=4242).read_bytes()
    at.file_uploader[0].set_value(("mine.jpg", photo, "image/jpeg")).run()
    assert not at.exception
    assert any(c.value == "uploaded: mine.jpg" for c in at.caption)
    assert "q" not in at.query_params
    assert "An upload cannot be shared: this page's link names no image while it is the query." in texts(at)
    at.file_uploader[0].set_value(None).run()  # the upload removed: the image query, and its link, again
    assert not at.exception and at.query_params["q"] == "reds/r0.jpg"
    assert any(c.value == "query: reds/r0.jpg" for c in at.caption)


def test_duplicate_thumbnails_are_one_size_however_small_the_group(app_env):
    """A pair once filled two of four columns (a quarter of the page each, pixelated) while big groups had eight."""
    threshold = float(np.ceil(app_env.nearest_distances().min() * 100) / 100)
    at = new_app(tab="Duplicates", t=str(threshold)).run()
    assert not at.exception
    shown = [c for c in at.columns if any("· nearest" in cap.value for cap in c.caption)]
    assert shown and all(abs(c.weight - 1 / 8) < 1e-9 for c in shown), [c.weight for c in shown]


def test_the_number_of_clusters_is_in_the_link(app_env):
    """The number input is bound to ?ck= (AppTest does not write bound widgets back to its URL)."""
    suggested = new_app(tab="Clusters").run().number_input(key="ck").value
    asked = 2 if suggested != 2 else 3
    at = new_app(tab="Clusters", ck=str(asked)).run()
    assert not at.exception
    assert at.number_input(key="ck").value == asked and at.metric[0].value == str(asked)


def test_more_and_less_like_this_buttons_have_a_label(app_env):
    """Icon-only 👍/👎 buttons had no accessible name."""
    at = new_app(q="blues/b0.png").run()
    thumbs = [b for b in at.button if b.key and (b.key.startswith("more_pos_") or b.key.startswith("more_neg_"))]
    assert thumbs and all(b.label in ("More", "Less") for b in thumbs), [b.label for b in thumbs]
