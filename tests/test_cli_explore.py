"""The exploration commands: cluster, explain, outliers, and query with several images / --not."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np

from imgsim.cli import main
from imgsim.collection import Collection


def run_json(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_cluster_json(capsys, built_index):
    col = Collection.open(built_index)
    data = run_json(capsys, "cluster", str(built_index), "--k", "3", "--json")
    assert data["k"] == 3 and data["random_weights"] is True
    assert [c["id"] for c in data["clusters"]] == [0, 1, 2]
    assert sum(c["size"] for c in data["clusters"]) == col.count
    assert sorted(p for c in data["clusters"] for p in c["paths"]) == sorted(col.paths)
    for c in data["clusters"]:
        assert c["size"] == len(c["paths"]) and c["central"] == c["paths"][:len(c["central"])]


def test_cluster_without_k_uses_the_suggested_k(capsys, built_index):
    data = run_json(capsys, "cluster", str(built_index), "--json")
    assert data["k"] == data["suggested"]["k"] and data["requested_k"] is None
    assert max(data["suggested"]["silhouette"].items(), key=lambda kv: kv[1])[0] == str(data["k"])


def test_cluster_out_links_and_refuses_unsafe_targets(capsys, built_index, photo_dir, tmp_path):
    out = tmp_path / "albums"
    data = run_json(capsys, "cluster", str(built_index), "--k", "2", "--json", "--out", str(out), "--link")
    assert data["out"]["files"] == Collection.open(built_index).count and data["out"]["mode"] == "link"
    for c in data["clusters"]:
        for rel in c["paths"]:
            link = out / f"cluster-{c['id'] + 1}" / rel.replace("/", "__")
            assert os.readlink(link) == str(photo_dir.resolve() / rel)
    # the same target again: not empty
    assert main(["cluster", str(built_index), "--k", "2", "--out", str(out), "--copy"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: Refusing --out {out}: it is not an empty folder. Choose a new or empty folder.\n"
    inside = photo_dir / "albums"
    assert main(["cluster", str(built_index), "--k", "2", "--out", str(inside)]) == 1
    assert capsys.readouterr().err == (f"error: Refusing --out {inside}: it is inside the image folder "
                                       f"{photo_dir.resolve()}. Choose a folder outside it, so the originals are "
                                       "never touched.\n")
    assert not inside.exists()
    assert main(["cluster", str(built_index), "--k", "2", "--copy"]) == 1
    assert "--link and --copy need --out DIR" in capsys.readouterr().err


def test_explain_json_cells_sum_to_the_cosine(capsys, built_index, photo_dir):
    data = run_json(capsys, "explain", str(built_index), str(photo_dir / "reds" / "r1.jpg"),
                    str(photo_dir / "blues" / "b2.png"), "--json")
    cells = np.array(data["cells"])
    assert cells.shape == (7, 7) and data["mode"] == "flatten" and data["pooling"] == "flatten"
    assert abs(cells.sum() - data["cosine"]) < 1e-5
    assert main(["explain", str(built_index), str(photo_dir / "reds" / "r1.jpg"), str(photo_dir / "reds" / "r2.jpg")]) == 0
    out = capsys.readouterr().out
    assert "per-cell dot products (sum = cosine)" in out and "strongest of the 49 cells carry" in out


def test_outliers_json(capsys, built_index):
    col = Collection.open(built_index)
    data = run_json(capsys, "outliers", str(built_index), "-n", "3", "--json")
    assert data["n"] == 3 and [o["rank"] for o in data["outliers"]] == [1, 2, 3]
    assert [o["path"] for o in data["outliers"]] == [col.paths[o.row] for o in col.outliers(3)]
    scores = [o["score"] for o in data["outliers"]]
    assert scores == sorted(scores, reverse=True)


def test_query_single_image_json_is_unchanged(capsys, built_index, photo_dir):
    path = str(photo_dir / "reds" / "r0.jpg")
    data = run_json(capsys, "query", str(built_index), path, "-k", "3", "--json")
    assert set(data) == {"query", "neighbors", "k", "weights", "random_weights"}
    assert data["query"] == path and data["neighbors"][0]["path"] == "reds/r0.jpg"


def test_query_several_images_and_not(capsys, built_index, photo_dir):
    col = Collection.open(built_index)
    a, b = str(photo_dir / "reds" / "r0.jpg"), str(photo_dir / "reds" / "r3.jpg")
    data = run_json(capsys, "query", str(built_index), a, b, "-k", "4", "--json")
    assert data["query"] == [a, b] and data["not"] == [] and len(data["neighbors"]) == 4
    expected = col.query_examples([(col.paths.index("reds/r0.jpg"), None), (col.paths.index("reds/r3.jpg"), None)],
                                  [], 4)
    assert [n["path"] for n in data["neighbors"]] == [n.path for n in expected.neighbors]
    # --not with a single positive: the negative drops down the ranking
    plain = run_json(capsys, "query", str(built_index), a, "-k", "12", "--json")
    second = plain["neighbors"][1]["path"]
    data = run_json(capsys, "query", str(built_index), a, "--not", str(photo_dir / second), "-k", "12", "--json")
    assert data["not"] == [str(photo_dir / second)]
    assert [n["path"] for n in data["neighbors"]].index(second) > 1


def test_image_arguments_may_be_paths_relative_to_the_collection(capsys, built_index, photo_dir, tmp_path,
                                                                monkeypatch):
    """Paths as results print them can be given back to query, --not and explain; a file at the path as given
    wins, and a path that leaves the folder is not one of its images."""
    here = tmp_path / "here"  # a working folder beside none of the test's folders
    here.mkdir()
    monkeypatch.chdir(here)
    data = run_json(capsys, "query", str(built_index), "reds/r2.jpg", "-k", "12", "--json")
    assert data["query"] == "reds/r2.jpg"
    assert {k: data["neighbors"][0][k] for k in ("path", "distance", "similarity")} == \
        {"path": "reds/r2.jpg", "distance": 0.0, "similarity": 1.0}
    second = data["neighbors"][1]["path"]
    more = run_json(capsys, "query", str(built_index), "reds/r2.jpg", "--not", second, "-k", "12", "--json")
    assert more["not"] == [second] and [n["path"] for n in more["neighbors"]].index(second) > 1
    by_path = run_json(capsys, "explain", str(built_index), str(photo_dir / "reds" / "r1.jpg"),
                       str(photo_dir / "blues" / "b2.png"), "--json")
    by_rel = run_json(capsys, "explain", str(built_index), "reds/r1.jpg", "blues/b2.png", "--json")
    assert (by_rel["cosine"], by_rel["cells"]) == (by_path["cosine"], by_path["cells"])
    (here / "reds").mkdir()
    shutil.copy(photo_dir / "blues" / "b1.png", here / "reds" / "r2.jpg")  # another image, at the same path
    data = run_json(capsys, "query", str(built_index), "reds/r2.jpg", "-k", "1", "--json")
    assert {k: data["neighbors"][0][k] for k in ("path", "distance", "similarity")} == \
        {"path": "blues/b1.png", "distance": 0.0, "similarity": 1.0}
    outside = f"../{photo_dir.resolve().name}/reds/r1.jpg"
    assert main(["query", str(built_index), outside]) == 1
    assert capsys.readouterr().err == f"error: Query image not found: {outside}\n"


def test_outliers_say_how_many_neighbours_the_score_averages_in_a_tiny_collection(capsys, tmp_path, random_extractor,
                                                                                monkeypatch):
    import imgsim.engines.local

    from .conftest import make_photo

    for i in range(3):
        make_photo(tmp_path / "src" / f"p{i}.jpg", seed=70 + i)
    monkeypatch.setattr(imgsim.engines.local, "make_backbone", lambda *a, **k: random_extractor)
    ix = str(tmp_path / "ix")
    assert main(["index", str(tmp_path / "src"), "--index", ix, "--weights", "random", "--quiet"]) == 0
    capsys.readouterr()
    data = run_json(capsys, "outliers", ix, "--json")
    assert data["score"] == "mean distance to the 2 nearest other images"  # 3 images: each has 2 others
    graph = np.asarray(Collection.open(ix).index.array("nn_distances"))
    assert graph.shape == (3, 2)
    assert data["outliers"][0]["score"] == round(float(graph.mean(axis=1).max()), 6)
    assert main(["outliers", ix]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[:2] == ["The images farthest from their 2 nearest neighbours:",
                                    f"{'rank':>4}  {'mean d2':>8}  {'nearest':>8}  path"]
