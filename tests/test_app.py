"""The dashboard, driven headlessly with Streamlit's AppTest against a small random-weights index."""

from __future__ import annotations

import re
import socket
import urllib.error
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import imgsim.collection
import imgsim.models.base
import imgsim.models.resnet50
from imgsim.collection import Collection
from imgsim.serving.policy import plain

from .conftest import assert_reference_neighbors, make_photo, reference_distances, serve

APP = str(Path(__file__).resolve().parents[1] / "app.py")
# A result card's figures: rank, distance and cosine, one line each (older layout: one line for all three).
RESULT = re.compile(r"^:small\[\*\*#(\d+)\*\*(?:\]  \n:small\[| · )distance \*\*([0-9.]+)\*\*(?:\]  \n:small\[| · )"
                    r"cos ([-0-9.]+)\]$")


@pytest.fixture
def app_env(monkeypatch, built_index, photo_dir, tmp_path):
    monkeypatch.setenv("IMGSIM_INDEX", str(built_index))
    monkeypatch.setenv("IMGSIM_IMAGES", str(photo_dir))
    monkeypatch.setenv("IMGSIM_WEIGHTS", "random")
    monkeypatch.setenv("IMGSIM_CACHE", str(tmp_path / "cache"))
    st.cache_resource.clear()
    st.cache_data.clear()
    return Collection.open(built_index)


def new_app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    for key, value in params.items():
        at.query_params[key] = value
    return at


def results(at: AppTest) -> list[tuple[int, float, float]]:
    out = []
    for md in at.markdown:
        m = RESULT.match(md.value)
        if m:
            out.append((int(m.group(1)), float(m.group(2)), float(m.group(3))))
    return out


def shown_neighbors(at: AppTest, col: Collection) -> list[tuple[str, float]]:
    """The result cards' (path, distance) in page order: each card's caption is its image's path."""
    names = [c.value for c in at.caption if c.value in col.paths]
    found = results(at)
    assert len(names) == len(found), (names, found)
    return [(name, d) for name, (_, d, _) in zip(names, found)]


def texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [i.value for i in at.info]
                     + [w.value for w in at.warning] + [e.value for e in at.error])


def test_every_tab_renders_without_exception(app_env):
    expected = {"Search": "Pick an image above, upload one, or click a point on the map.",
                "Map": "Lasso or box-select points",
                "Duplicates": "images are in a group",
                "About this collection": "Do neighbours share a folder?"}
    for tab, marker in expected.items():
        at = new_app(tab=tab).run()
        assert not at.exception, at.exception
        assert not at.error
        page = texts(at) + "\n".join(h.value for h in at.subheader)
        assert marker in page, (tab, page)


def test_random_weights_banner_is_visible(app_env):
    at = new_app().run()
    assert any(w.value.startswith("**Random weights.**") for w in at.warning)


def test_choosing_a_gallery_image_shows_k_results_nearest_first(app_env):
    at = new_app().run()
    row = app_env.paths.index("reds/r2.jpg")
    at.button(key=f"pick_{row}").click().run()
    assert not at.exception
    found = results(at)
    assert [r for r, _, _ in found] == list(range(1, 9))
    distances = [d for _, d, _ in found]
    assert distances == sorted(distances) and distances[0] == 0.0
    expected = app_env.neighbors_of_row(row, 8)
    assert distances == [round(n.distance, 3) for n in expected.neighbors]
    assert any(c.value == "query: reds/r2.jpg" for c in at.caption)
    assert at.query_params["q"] == "reds/r2.jpg"


def test_changing_k_and_threshold_updates_the_view(app_env):
    at = new_app(q="blues/b0.png").run()
    assert len(results(at)) == 8
    at.slider(key="k").set_value(3).run()
    assert len(results(at)) == 3
    at.slider(key="k").set_value(50).run()
    assert len(results(at)) == 12
    assert "(k = 12, clamped from 50)" in texts(at)

    at = new_app(tab="Duplicates").run()
    counts = {}
    for t in (0.0, 0.5, 1.0):
        at.slider(key="t").set_value(t).run()
        assert not at.exception
        counts[t] = int(at.metric[0].value)
        assert counts[t] == len(app_env.duplicate_groups(t))
    assert counts[1.0] >= 1  # random-weight vectors are close: one big group at a loose threshold
    at.slider(key="t").set_value(0.0).run()
    closest = float(app_env.nearest_distances().min())
    assert [i.value for i in at.info] == [f"No two images are within 0.00 of each other: the closest pair is "
                                          f"{closest:.3f} apart. Raise the threshold to see groups."]


def test_url_parameters_restore_the_view(app_env):
    at = new_app(q="reds/r1.jpg", k="4", tab="Search").run()
    assert not at.exception
    assert any(c.value == "query: reds/r1.jpg" for c in at.caption)
    assert len(results(at)) == 4
    dup = new_app(tab="Duplicates", t="0.42").run()
    assert dup.slider(key="t").value == pytest.approx(0.42)
    assert int(dup.metric[0].value) == len(app_env.duplicate_groups(0.42))
    missing = new_app(q="nope.jpg").run()
    assert "The image in the link (nope.jpg) is not in this collection." in texts(missing)


def test_clicking_a_map_point_makes_it_the_query(app_env):
    at = new_app(q="reds/r0.jpg").run()
    target = app_env.paths.index("blues/b3.png")
    at.session_state["search_map"] = {"clicked": [app_env.index.generation, target], "selection": []}
    at.run()
    assert not at.exception
    assert any(c.value == "query: blues/b3.png" for c in at.caption)
    assert at.query_params["q"] == "blues/b3.png"


def test_a_map_click_or_lasso_drawn_from_an_earlier_generation_is_not_applied_to_renumbered_rows(app_env):
    """Another visitor re-indexed after this page drew its map: row numbers may now be other images."""
    at = new_app(q="reds/r0.jpg").run()
    at.session_state["search_map"] = {"clicked": ["g-old", app_env.paths.index("blues/b3.png")], "selection": []}
    at.run()
    assert not at.exception
    assert any(c.value == "query: reds/r0.jpg" for c in at.caption) and at.query_params["q"] == "reds/r0.jpg"
    assert [t.value for t in at.toast] == ["The collection was re-indexed since the map was drawn: click the point again."]
    lasso = new_app(tab="Map").run()
    lasso.session_state["full_map"] = {"selection": {"generation": "g-old", "rows": [0, 2, 5]}}
    lasso.run()
    assert not lasso.exception and "selected image(s)" not in texts(lasso)
    lasso.session_state["full_map"] = {"selection": {"generation": app_env.index.generation, "rows": [0, 2, 5]}}
    lasso.run()
    assert "**3 selected image(s)**" in texts(lasso)
    # A hand-made event (the browser is the visitor's) with values that are not rows: ignored, no error.
    lasso.session_state["full_map"] = {"selection": {"generation": app_env.index.generation,
                                                     "rows": [0, "x", None, [1], 2.0, True]}}
    lasso.run()
    assert not lasso.exception and "**2 selected image(s)**" in texts(lasso)


def test_lasso_selection_lists_images_and_offers_csv(app_env):
    at = new_app(tab="Map").run()
    at.session_state["full_map"] = {"selection": [0, 2, 5]}
    at.run()
    assert not at.exception
    assert "**3 selected image(s)**" in texts(at)
    assert any(el.proto.label == "Download selection as CSV" for el in at.get("download_button"))


def _jpeg(folder: Path, seed: int) -> bytes:
    return make_photo(folder / f"upload-{seed}.jpg", seed=seed).read_bytes()


def test_upload_is_embedded_and_model_and_index_load_once_in_20_reruns(app_env, monkeypatch, random_extractor,
                                                                       tmp_path):
    loads, builds = [], []
    real_load = imgsim.collection.load_index

    def counting_load(path):
        loads.append(path)
        return real_load(path)

    def counting_model(spec, weights, pooling="flatten", batch_size=16, **options):
        builds.append((weights, pooling))
        return random_extractor

    monkeypatch.setattr(imgsim.collection, "load_index", counting_load)
    monkeypatch.setattr(imgsim.models.base, "make_backbone", counting_model)
    at = new_app().run()
    at.file_uploader[0].set_value(("holiday photo.jpg", _jpeg(tmp_path, 4242), "image/jpeg")).run()
    assert not at.exception
    assert any(c.value == "uploaded: holiday photo.jpg" for c in at.caption)
    found = results(at)
    assert len(found) == 8 and all(d > 0 for _, d, _ in found)
    # The upload's own vector: the rows and distances (as shown, 3 decimals) of the notebook's per-image path.
    reference = reference_distances(random_extractor.model, app_env, tmp_path / "upload-4242.jpg")
    assert_reference_neighbors(shown_neighbors(at, app_env), reference, tol=5e-4 + 1e-6)
    for _ in range(20):
        at.run()
        assert not at.exception
    assert len(loads) == 1
    assert builds == [("random", "flatten")]


def test_unusable_upload_gets_a_one_line_message(app_env, monkeypatch, random_extractor):
    monkeypatch.setattr(imgsim.models.base, "make_backbone", lambda *a, **k: random_extractor)
    at = new_app().run()
    at.file_uploader[0].set_value(("notes.jpg", b"definitely not an image", "image/jpeg")).run()
    assert not at.exception
    assert [e.value for e in at.error] == [plain("That upload cannot be used: not an image: no image format recognised.")]


def test_missing_weights_explain_what_to_do_and_existing_index_still_browses(app_env, monkeypatch, tmp_path):
    keras = imgsim.models.native.import_keras()

    def offline_get_file(*args, **kwargs):  # what Keras raises on a machine without internet
        try:
            raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))
        except urllib.error.URLError as e:
            raise Exception(f"URL fetch failure on {imgsim.models.resnet50.WEIGHTS_URL}: {e.errno} -- {e.reason}")

    monkeypatch.setattr(keras.utils, "get_file", offline_get_file)
    monkeypatch.setenv("IMGSIM_WEIGHTS", "imagenet")
    # The random-weights index still opens and answers queries without any model.
    at = new_app(q="reds/r3.jpg").run()
    assert not at.exception and len(results(at)) == 8
    # A folder with no index cannot be indexed: the page says how to supply the weights.
    fresh = tmp_path / "fresh"
    make_photo(fresh / "a.jpg", seed=1)
    monkeypatch.setenv("IMGSIM_IMAGES", str(fresh))
    monkeypatch.delenv("IMGSIM_INDEX")
    at = new_app().run()
    assert not at.exception
    cache = str(imgsim.models.resnet50.keras_cache_path()).replace(str(Path.home()), "~")  # no server path (issue 11)
    assert at.error[0].value == "**The model's weights cannot be loaded.** " + plain(
        "ImageNet weights for ResNet50 are not available: "
        f"{cache} does not exist and the download failed "
        "([Errno -2] Name or service not known).", 2000)
    assert str(Path.home()) not in texts(at) and f"`{cache}`" in texts(at)
    assert not at.get("progress"), "the indexing progress bar must not stay on the page above the error"
    assert "IMGSIM_WEIGHTS=/path/to/resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5" in texts(at)


def test_empty_folder_says_so(app_env, monkeypatch, tmp_path, random_extractor):
    monkeypatch.setattr(imgsim.models.base, "make_backbone", lambda *a, **k: random_extractor)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no pictures here")
    monkeypatch.setenv("IMGSIM_IMAGES", str(empty))
    monkeypatch.delenv("IMGSIM_INDEX")
    at = new_app().run()
    assert not at.exception
    # Visitors see the collection's name, never the server path (issue 11).
    assert "No usable images in `empty`: 0 skipped, 1 other files ignored." in texts(at)
    assert str(empty) not in texts(at)


def test_streamlit_config_hides_tracebacks_and_caps_uploads():
    import tomllib

    config = tomllib.loads((Path(APP).parent / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none"
    assert config["server"]["enableXsrfProtection"] is True
    assert config["server"]["maxUploadSize"] == 25


def test_browsing_an_index_never_imports_tensorflow(built_index, photo_dir, tmp_path):
    """Opening the page and querying indexed images needs only stored vectors: TensorFlow stays out."""
    import subprocess
    import sys

    script = f"""
import os, sys
os.environ.update(IMGSIM_INDEX={str(built_index)!r}, IMGSIM_IMAGES={str(photo_dir)!r}, IMGSIM_WEIGHTS="random",
                  IMGSIM_CACHE={str(tmp_path / 'cache')!r})
from streamlit.testing.v1 import AppTest
at = AppTest.from_file({APP!r}, default_timeout=120)
at.query_params["q"] = "reds/r1.jpg"
at.run()
for tab in ("Map", "Clusters", "Duplicates", "Odd ones out", "About this collection"):
    at.query_params["tab"] = tab
    at.run()
assert not at.exception, at.exception
print("tensorflow" in sys.modules, "keras" in sys.modules)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=str(Path(APP).parent))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False False"


def test_update_index_on_a_float16_index_builds_its_model_in_float16(monkeypatch, tmp_path, random_extractor):
    """The page's "Update index" uses a model of the index's own precision, so the update goes through and
    never mixes float32 vectors into a float16 index."""
    import time

    from imgsim.build import build_index
    from imgsim.store.generations import load_index

    from .test_build import Half

    src = tmp_path / "src"
    for i in range(3):
        make_photo(src / f"p{i}.jpg", seed=700 + i)
    ix = tmp_path / "ix.imgsim"
    build_index(src, ix, weights="random", precision="float16", model_factory=lambda w, p, b: Half(random_extractor))
    assert load_index(ix).meta["precision"] == "float16"
    built = []

    def model(spec, weights, pooling="flatten", batch_size=16, runtime=None, precision=None):
        built.append((str(weights), pooling, precision))
        return Half(random_extractor) if precision == "float16" else random_extractor

    monkeypatch.setattr(imgsim.models.base, "make_backbone", model)
    serve(monkeypatch, tmp_path, ix, src, ALLOW_INDEXING="1")
    at = new_app().run()
    assert not at.exception
    make_photo(src / "p3.jpg", seed=703)
    [b for b in at.button if b.label == "Update index"][0].click().run()
    for _ in range(120):
        if load_index(ix).count == 4:
            break
        time.sleep(0.5)
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert load_index(ix).count == 4 and load_index(ix).meta["precision"] == "float16"
    assert built == [("random", "flatten", "float16")]


def test_the_sidebar_names_the_weights_of_the_index_shown(app_env, monkeypatch):
    """With only IMGSIM_INDEX set it once said "Weights for new indexes: imagenet" above a random-weights index."""
    monkeypatch.delenv("IMGSIM_WEIGHTS")
    at = new_app().run()
    assert not at.exception
    shown = [c.value for c in at.sidebar.caption if "Weights" in c.value]
    assert len(shown) == 1 and shown[0].endswith("Weights: random") and "imagenet" not in shown[0], shown


def test_about_figures_are_the_ones_evaluate_prints(app_env, capsys):
    import json

    from imgsim.cli import main

    assert main(["evaluate", str(app_env.index.directory), "-k", "5", "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    at = new_app(tab="About this collection").run()
    assert not at.exception
    assert {m.label: m.value for m in at.metric} == {
        "precision@5": f"{ev['precision_at_k']:.3f}", "1-NN accuracy": f"{ev['nn_accuracy']:.3f}",
        "random ranking (expected)": f"{ev['baseline_precision_at_k']:.3f}"}
    table = next(d.value for d in at.dataframe if "folder" in d.value.columns)
    assert table.to_dict("records") == [
        {"folder": s["label"], "images": s["images"], "precision@5": pytest.approx(s["precision_at_k"], abs=1e-12),
         "1-NN accuracy": pytest.approx(s["nn_accuracy"], abs=1e-12), "random": pytest.approx(s["baseline"], abs=1e-12)}
        for s in ev["per_label"]]
    assert "Same numbers as `python -m imgsim evaluate INDEX_DIR -k 5`." in [c.value for c in at.caption]


def test_image_grid_view_shows_and_offers_the_grid_of_the_collections_own_thumbnails(app_env, monkeypatch):
    import io

    import numpy as np
    from PIL import Image

    from imgsim import decode
    from imgsim.analysis.map2d import grid_layout

    offered = []
    real = st.download_button

    def recording(label, data, *args, **kwargs):
        offered.append((label, data, kwargs.get("file_name"), kwargs.get("mime")))
        return real(label, data, *args, **kwargs)

    monkeypatch.setattr(st, "download_button", recording)
    at = new_app(tab="Map").run()
    at.session_state["map_view"] = "Image grid"
    at.run()
    assert not at.exception
    assert [i.proto.imgs[0].caption for i in at.get("image")] == ["t-SNE map snapped to a grid (up to 900 images)"]
    [(label, png, name, mime)] = [o for o in offered if o[0] == "Download PNG"]
    assert (name, mime) == ("imgsim-tsne-grid.png", "image/png")
    pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert pixels.shape == (4 * 64, 4 * 64, 3)  # 12 images: a 4x4 grid of 64 px cells
    layout = grid_layout(app_env.map_xy(), max_items=900)
    for row, (i, j) in zip(layout.rows, layout.cells):
        own = decode.thumbnail(decode.read_bytes(app_env.image_path(int(row))), 64, square="crop")
        np.testing.assert_array_equal(pixels[64 * i:64 * (i + 1), 64 * j:64 * (j + 1)], np.asarray(own.convert("RGB")))
    filled = {(int(i), int(j)) for i, j in layout.cells}
    assert all((pixels[64 * i:64 * (i + 1), 64 * j:64 * (j + 1)] == 255).all()
               for i in range(4) for j in range(4) if (i, j) not in filled)
