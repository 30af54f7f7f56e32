"""The HTTP API (imgsim/service/http.py): the CLI's answers over HTTP, and every hostile input refused with a
one-line JSON error that names no server path."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from starlette.testclient import TestClient

from imgsim.analysis.duplicates import duplicate_scan
from imgsim.collection import Collection
from imgsim.errors import ImgsimError
from imgsim.service.http import make_app, server_hosts
from imgsim.service.limits import CLIP_RETRIEVAL_DEDUP, Limits, check_listen
from imgsim.service.operations import Service
from imgsim.service.results import neighbors_json
from tests.conftest import make_photo

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def service(built_index, random_extractor) -> Service:
    return Service(Collection.open(built_index), extractor=lambda: random_extractor)


def local(app, **kwargs) -> TestClient:
    """A test client that calls the server by a loopback name (a server without a token answers to no other)."""
    return TestClient(app, base_url="http://127.0.0.1:8600", **kwargs)


@pytest.fixture(scope="module")
def client(service) -> TestClient:
    return local(make_app(service), raise_server_exceptions=False)


def cli_json(index_dir: Path, cwd: Path, *args: str) -> dict:
    """What ``python -m imgsim ARGS --json`` prints, run from ``cwd`` (so relative image paths read as typed)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "imgsim", args[0], str(index_dir), *args[1:], "--json"], cwd=cwd,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def assert_refusal(response, status: int, match: str, *server_paths: Path) -> None:
    """A 4xx with ``{"error": one line}``: no traceback, no server path."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert match in body["error"], body["error"]
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    for p in server_paths:
        assert str(p) not in response.text


# --- the CLI's answers -------------------------------------------------------------------------------------

def test_similar_is_query_json(client, built_index, photo_dir):
    got = client.get("/v1/similar", params={"path": "reds/r1.jpg", "k": 4})
    assert got.status_code == 200
    assert got.json() == cli_json(built_index, photo_dir, "query", "reds/r1.jpg", "-k", "4")
    first = got.json()["neighbors"][0]
    assert {k: first[k] for k in ("path", "distance", "similarity")} == {"path": "reds/r1.jpg", "distance": 0.0,
                                                                         "similarity": 1.0}


def test_filters_are_the_cli_filters(client, built_index, photo_dir):
    got = client.get("/v1/similar", params={"path": "reds/r1.jpg", "k": 4, "where": ["folder = reds", "width >= 100"]})
    assert got.status_code == 200
    assert got.json() == cli_json(built_index, photo_dir, "query", "reds/r1.jpg", "-k", "4", "--where", "folder = reds",
                                  "--where", "width >= 100")
    assert got.json()["where"] == ["folder = reds", "width >= 100"]
    assert [n["path"] for n in got.json()["neighbors"]][:1] == ["reds/r1.jpg"]
    assert all(n["metadata"]["folder"] == "reds" for n in got.json()["neighbors"]) and len(got.json()["neighbors"]) == 4
    body = {"positive": ["reds/r0.jpg", "blues/b2.png"], "k": 6, "where": "folder in [blues, '']", "max_distance": 1.5}
    got = client.post("/v1/search", json=body).json()
    assert got == cli_json(built_index, photo_dir, "query", "reds/r0.jpg", "blues/b2.png", "-k", "6",
                           "--where", "folder in [blues, '']", "--max-distance", "1.5")
    assert got["neighbors"] and all(n["path"].startswith("blues/") or "/" not in n["path"] for n in got["neighbors"])
    nowhere = client.post("/v1/search", json={"positive": ["top.jpg"], "near": "48.85,2.35,10"}).json()
    assert nowhere["near"] == "48.85,2.35,10" and nowhere["neighbors"] == []  # no photo here has a position
    upload = (photo_dir / "blues" / "b3.png").read_bytes()
    got = client.post("/v1/search", files={"image": ("b.png", upload, "image/png")},
                      data={"k": "3", "where": "folder = reds"}).json()
    assert got["where"] == ["folder = reds"] and all(n["path"].startswith("reds/") for n in got["neighbors"])


def test_more_like_these_is_query_json(client, built_index, photo_dir):
    got = client.post("/v1/search", json={"positive": ["reds/r0.jpg", "blues/b2.png"], "negative": ["top.jpg"], "k": 6})
    assert got.status_code == 200
    expected = cli_json(built_index, photo_dir, "query", "reds/r0.jpg", "blues/b2.png", "--not", "top.jpg", "-k", "6")
    assert got.json() == expected
    assert client.post("/v1/search", json={"positive": ["top.jpg"], "k": 3}).json() == \
        cli_json(built_index, photo_dir, "query", "top.jpg", "-k", "3")


def test_duplicates_clusters_and_explain_are_the_cli_json(client, built_index, photo_dir):
    assert client.get("/v1/duplicates", params={"threshold": 0.6}).json() == \
        cli_json(built_index, photo_dir, "dedup", "--threshold", "0.6")
    assert client.get("/v1/clusters", params={"k": 3}).json() == cli_json(built_index, photo_dir, "cluster", "--k", "3")
    got = client.get("/v1/explain", params={"a": "reds/r0.jpg", "b": "blues/b1.png"})
    assert got.json() == cli_json(built_index, photo_dir, "explain", "reds/r0.jpg", "blues/b1.png")


def test_uploads_and_vectors_find_what_the_cli_finds(client, service, built_index, photo_dir, random_extractor,
                                                      tmp_path):
    indexed = (photo_dir / "blues" / "b3.png").read_bytes()
    got = client.post("/v1/search", files={"image": ("whatever.png", indexed, "image/png")}, data={"k": "4"}).json()
    assert got["query"] == {"upload": {"bytes": len(indexed), "indexed": "blues/b3.png"}}
    assert got["neighbors"] == cli_json(built_index, photo_dir, "query", "blues/b3.png", "-k", "4")["neighbors"]
    # An image that is not indexed is embedded: the same neighbours as the CLI's query of that file.
    new = make_photo(tmp_path / "new.jpg", seed=999)
    expected = service.collection.query_file(new, 5, extractor=lambda: random_extractor)
    body = base64.b64encode(new.read_bytes()).decode()
    got = client.post("/v1/search", json={"image": f"data:image/jpeg;base64,{body}", "k": 5}).json()
    assert got["query"]["upload"]["indexed"] is None
    assert got["neighbors"] == neighbors_json(service.collection, expected.neighbors)
    # A stored vector is its own nearest neighbour.
    vector = np.asarray(service.collection.index.vectors[3], dtype=float) * 7.0  # any length: scaled to unit
    got = client.post("/v1/search", json={"vector": vector.tolist(), "k": 2}).json()
    assert got["query"] == {"vector": len(vector)}
    assert got["neighbors"][0]["path"] == service.collection.paths[3]
    assert got["neighbors"][0]["distance"] == pytest.approx(0.0, abs=1e-5)


def test_deduplicate_and_max_distance_filter_the_results(client, service):
    plain = client.get("/v1/similar", params={"path": "reds/r2.jpg", "k": 12}).json()["neighbors"]
    far = round((plain[5]["distance"] + plain[6]["distance"]) / 2, 6)  # between two results: rounding cannot matter
    near = client.get("/v1/similar", params={"path": "reds/r2.jpg", "k": 12, "max_distance": far}).json()
    assert near["neighbors"] == plain[:6] and near["max_distance"] == far
    col = service.collection

    def gap(a: str, b: str) -> float:
        va, vb = (np.asarray(col.index.vectors[col.index.row_of(p)], dtype=np.float64) for p in (a, b))
        return float(np.sqrt(max(0.0, 2 - 2 * va @ vb)))

    candidates = [n["path"] for n in plain]
    threshold = float(np.percentile([gap(a, b) for i, a in enumerate(candidates) for b in candidates[i + 1:]], 20))
    got = client.post("/v1/search", json={"positive": ["reds/r2.jpg"], "k": 5, "deduplicate": threshold}).json()
    kept = [n["path"] for n in got["neighbors"]]
    assert got["deduplicate"] == threshold and kept[0] == "reds/r2.jpg" and 2 <= len(kept) <= 5
    assert all(gap(a, b) > threshold for i, a in enumerate(kept) for b in kept[i + 1:])
    # Every better result left out is within the threshold of one kept before it.
    rank = {p: i for i, p in enumerate(candidates)}
    dropped = [p for p in candidates[:rank[kept[-1]]] if p not in kept]
    assert dropped and all(any(rank[q] < rank[p] and gap(p, q) <= threshold for q in kept) for p in dropped)
    assert client.post("/v1/search", json={"positive": ["reds/r2.jpg"], "deduplicate": True}).json()["deduplicate"] \
        == CLIP_RETRIEVAL_DEDUP


def test_thumbnail_is_a_jpeg_of_the_asked_size(client):
    got = client.get("/v1/images/blues/b0.png/thumbnail", params={"size": 48})
    assert got.status_code == 200 and got.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(got.content)).size) == 48


def test_info_names_the_collection_not_server_paths(client, built_index, photo_dir):
    got = client.get("/v1/info")
    data = got.json()
    assert data["indexed"] == 12 and data["root"] == photo_dir.name == data["collection"]
    assert data["capabilities"] == {"text": False, "explain": True, "clusters": True, "previews": True}
    assert data["limits"]["max_k"] == 1000
    assert str(photo_dir) not in got.text and str(built_index) not in got.text


def test_knn_service_answers_clip_clients(client, service):
    vector = np.asarray(service.collection.index.vectors[0], dtype=float).tolist()
    # Exactly what clip-retrieval's ClipClient posts (requests' data=json.dumps(...): no content type).
    payload = {"text": None, "image": None, "image_url": None, "embedding_input": vector, "deduplicate": False,
               "use_safety_model": True, "use_violence_detector": True, "indice_name": "photos", "use_mclip": False,
               "aesthetic_score": 9, "aesthetic_weight": 0.5, "modality": "image", "num_images": 3,
               "num_result_ids": 3}
    got = client.post("/knn-service", content=json.dumps(payload).encode())
    assert got.status_code == 200
    results = got.json()
    assert [r["id"] for r in results][0] == 0 and len(results) == 3
    first = results[0]
    assert set(first) == {"id", "similarity", "distance", "path", "url", "caption"}
    assert first["path"] == service.collection.paths[0] and first["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert first["url"].endswith(f"/v1/images/{first['path']}/thumbnail")
    assert client.get(first["url"]).status_code == 200
    assert client.get("/indices-list").json() == [service.name]
    assert_refusal(client.post("/knn-service", json={**payload, "image_url": "http://169.254.169.254/x"}), 400,
                   "image_url is not supported")
    assert_refusal(client.post("/knn-service", json={**payload, "modality": "text"}), 400, "modality")


def test_openapi_page_lists_the_routes(client):
    spec = client.get("/openapi.json").json()
    assert {"/v1/info", "/v1/similar", "/v1/search", "/v1/images/{path}/thumbnail", "/v1/duplicates",
            "/v1/clusters", "/v1/explain", "/knn-service"} <= set(spec["paths"])
    assert "multipart/form-data" in spec["paths"]["/v1/search"]["post"]["requestBody"]["content"]
    assert client.get("/docs").status_code == 200


def test_duplicates_stop_at_max_pairs_and_say_so(service):
    col = service.collection
    threshold = 1.0
    pairs = len(col.search.pairs_within(threshold)[0])
    assert pairs > 8  # enough for a cap of 5 to cut
    capped = Service(col, Limits(max_pairs=5), extractor=service._make_extractor)
    got = local(make_app(capped)).get("/v1/duplicates", params={"threshold": threshold}).json()
    scan = duplicate_scan(col.search, threshold, 5)
    assert scan.truncated and scan.pairs == 5
    assert got["groups"] == [[col.paths[r] for r in g.rows] for g in scan.groups]
    assert (got["truncated"], got["max_pairs"]) == (True, 5)
    assert got["note"] == ("More than 5 pairs of images are within 1: the scan stopped there, so these groups (from "
                           "the first 5 pairs, in index order) are incomplete. A lower threshold finds the "
                           "near-duplicates.")
    whole = local(make_app(Service(col, Limits(max_pairs=pairs), extractor=service._make_extractor)))
    full = whole.get("/v1/duplicates", params={"threshold": threshold}).json()
    assert "truncated" not in full and full == service.duplicates(threshold)
    assert local(make_app(capped)).get("/v1/info").json()["limits"]["max_pairs"] == 5


# --- hostile input ------------------------------------------------------------------------------------------

def png_header(width: int, height: int) -> bytes:
    """A tiny PNG file that declares ``width`` x ``height`` pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("method, url, kwargs, status, match", [
    ("get", "/v1/similar?path=../../etc/passwd", {}, 400, "may not leave the collection"),
    ("get", "/v1/similar?path=reds/../../x.jpg", {}, 400, "may not leave the collection"),
    ("get", "/v1/similar?path=/etc/passwd", {}, 400, "is absolute"),
    ("get", "/v1/similar?path=broken.jpg", {}, 404, "No image 'broken.jpg' in this collection"),
    ("get", "/v1/similar?path=reds/r1.jpg&k=0", {}, 400, "k: Input should be greater than or equal to 1"),
    ("get", "/v1/similar?path=reds/r1.jpg&k=1001", {}, 400, "k: Input should be less than or equal to 1000"),
    ("get", "/v1/similar?path=reds/r1.jpg&k=many", {}, 400, "k: Input should be a valid integer"),
    ("get", "/v1/similar", {}, 400, "path: Field required"),
    ("get", "/v1/images/%2e%2e/%2e%2e/etc/passwd/thumbnail", {}, 400, "may not leave the collection"),
    ("get", "/v1/images/reds/r1.jpg/thumbnail?size=5000", {}, 400, "size: Input should be less than or equal to 1024"),
    ("get", "/v1/duplicates?threshold=3", {}, 400, "threshold: Input should be less than or equal to 1"),
    ("get", "/v1/duplicates?threshold=2", {}, 400, "threshold: Input should be less than or equal to 1"),
    ("get", "/v1/clusters?k=1000", {}, 400, "k: Input should be less than or equal to 100"),
    ("get", "/v1/explain?a=reds/r1.jpg&b=/etc/hosts", {}, 400, "is absolute"),
    ("post", "/v1/search", {"content": b"{not json"}, 400, "The body is not valid JSON (line 1, column 2)"),
    ("post", "/v1/search", {"content": b""}, 400, "The body is empty"),
    ("post", "/v1/search", {"json": ["reds/r1.jpg"]}, 400, "The body must be a JSON object"),
    ("post", "/v1/search", {"json": {"positive": ["reds/r1.jpg"], "wher": "taken > 2020"}}, 400,
     "Unknown field 'wher'"),
    ("post", "/v1/search", {"json": {"positive": ["reds/r1.jpg"], "where": "widht > 3"}}, 400,
     "unknown field 'widht' (did you mean 'width'?)"),
    ("get", "/v1/similar?path=reds/r1.jpg&where=width%20~%203", {}, 400, "operator '~' does not apply to width"),
    ("get", "/v1/similar?path=reds/r1.jpg&near=91,0,5", {}, 400, "latitude 91 is outside -90..90"),
    ("post", "/v1/search", {"json": {"positive": ["reds/r1.jpg"], "k": 5000}}, 400, "k must be between 1 and 1000"),
    ("post", "/v1/search", {"json": {"positive": ["reds/r1.jpg"], "max_distance": -1}}, 400,
     "max_distance must be between 0 and 2"),
    ("post", "/v1/search", {"json": {}}, 400, "Send exactly one of text, vector, image or positive."),
    ("post", "/v1/search", {"json": {"text": "a cat", "positive": ["reds/r1.jpg"]}}, 400, "(got text, positive)"),
    ("post", "/v1/search", {"json": {"negative": ["reds/r1.jpg"], "vector": [1.0]}}, 400, "negative goes with positive"),
    ("post", "/v1/search", {"json": {"positive": ["reds/r1.jpg"] * 40}}, 400, "At most 32 positive and negative"),
    ("post", "/v1/search", {"json": {"vector": [0.5, 0.5]}}, 400, "vector has 2 values; this index's vectors have 100352"),
    ("post", "/v1/search", {"content": b'{"vector": [NaN, 1.0]}'}, 400, "vector has 2 values"),
    ("post", "/v1/search", {"json": {"vector": ["a"] * 3}}, 400, "vector.0: Input should be a valid number"),
    ("post", "/v1/search", {"json": {"text": "a red car"}}, 400, "Text search needs a CLIP index"),
    ("post", "/v1/search", {"json": {"image": "not base64!"}}, 400, "image is not valid base64"),
    ("post", "/v1/search", {"json": {"image": base64.b64encode(b"GIF89a but not really").decode()}}, 422,
     "not an image"),
    ("post", "/v1/search", {"files": {"image": ("bomb.png", png_header(12_000, 12_000), "image/png")}}, 413,
     "12000x12000 pixels exceeds the upload limit of 40,000,000"),
    ("post", "/v1/search", {"files": {"image": ("bomb.png", png_header(60_000, 60_000), "image/png")}}, 413,
     "could be decompression bomb"),
    ("post", "/v1/search", {"files": {"picture": ("a.png", b"x", "image/png")}}, 400, "the form field 'image'"),
    ("post", "/v1/search", {"files": {"image": ("a.png", b"x", "image/png")}, "data": {"k": "lots"}}, 400,
     "k must be a number"),
    ("post", "/v1/search", {"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data"}}, 400,
     "no boundary"),
    ("get", "/v1/nothing-here", {}, 404, "Not Found."),
    ("put", "/v1/info", {}, 405, "Method Not Allowed."),
])
def test_hostile_requests_get_a_one_line_4xx(client, built_index, photo_dir, method, url, kwargs, status, match):
    assert_refusal(getattr(client, method)(url, **kwargs), status, match, built_index, photo_dir)


def test_lists_are_bounded_in_the_schema_and_refused_before_their_items_are_read(client, service):
    dims = service.collection.index.dims
    schema = client.get("/openapi.json").json()["paths"]["/v1/search"]["post"]["requestBody"]["content"]
    props = schema["application/json"]["schema"]["properties"]
    assert props["vector"]["anyOf"][0]["maxItems"] == dims
    assert props["positive"]["maxItems"] == props["negative"]["maxItems"] == 32
    # Too long: refused by its length, before any of its items (here not numbers) is looked at.
    assert_refusal(client.post("/v1/search", json={"vector": ["a"] * (dims + 1)}), 400,
                   f"vector has {dims + 1} values; this index's vectors have {dims}.")
    assert_refusal(client.post("/v1/search", json={"negative": [7] * 33}), 400,
                   "At most 32 positive and negative images in all.")
    assert_refusal(client.post("/v1/search", json={"positive": ["/etc/passwd"] * 33}), 400,
                   "At most 32 positive and negative images in all.")


def test_vector_of_the_right_size_but_not_finite_is_refused(client, service):
    dims = service.collection.index.dims
    assert_refusal(client.post("/v1/search", content=b'{"vector": [NaN' + b", 1.0" * (dims - 1) + b"]}"), 400,
                   f"vector must be a list of {dims} finite numbers")
    assert_refusal(client.post("/v1/search", json={"vector": [0.0] * dims}), 400, "vector is all zeros")


@pytest.fixture
def own_copy(photo_dir, built_index, random_extractor, tmp_path) -> Service:
    """A service whose collection folder is a private copy (same files, same times) that a test may change."""
    folder = tmp_path / "photos"
    shutil.copytree(photo_dir, folder)  # copy2 keeps sizes and mtimes: the index still matches
    col = Collection.open(built_index)
    col.index.meta["root"] = str(folder)
    return Service(col, extractor=lambda: random_extractor)


def test_symlinks_out_of_the_collection_are_not_followed(own_copy, tmp_path):
    client = local(make_app(own_copy))
    secret = tmp_path / "secret.jpg"
    make_photo(secret, seed=5)
    target = own_copy.collection.index.root / "reds" / "r3.jpg"
    target.unlink()
    target.symlink_to(secret)
    for response in (client.get("/v1/similar", params={"path": "reds/r3.jpg"}),
                     client.get("/v1/images/reds/r3.jpg/thumbnail"),
                     client.post("/v1/search", json={"positive": ["reds/r3.jpg", "reds/r1.jpg"]})):
        assert_refusal(response, 403, "'reds/r3.jpg' leads outside the collection", tmp_path)


def test_a_file_gone_from_disk_is_still_answered_from_the_index(own_copy, photo_dir):
    client = local(make_app(own_copy))
    before = client.get("/v1/similar", params={"path": "blues/b4.png", "k": 3}).json()
    (own_copy.collection.index.root / "blues" / "b4.png").unlink()
    assert client.get("/v1/similar", params={"path": "blues/b4.png", "k": 3}).json() == before
    thumb = client.get("/v1/images/blues/b4.png/thumbnail")  # the preview stored at indexing time
    assert thumb.status_code == 200 and max(Image.open(io.BytesIO(thumb.content)).size) <= 64


def test_oversized_bodies_are_refused_from_their_header_before_reading(service):
    import anyio

    app = make_app(service)
    sent: list[dict] = []

    async def receive() -> dict:
        raise AssertionError("the body was read")

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/v1/search", "raw_path": b"/v1/search", "query_string": b"",
             "root_path": "", "headers": [(b"host", b"127.0.0.1:8600"), (b"content-length", str(10**9).encode()),
                                          (b"content-type", b"application/json")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8600)}
    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {"error": "The request body is larger than 25 MiB."}


def test_a_streamed_body_over_the_limit_is_cut_off(service):
    small = Service(service.collection, Limits(max_body_bytes=2**20), extractor=service._make_extractor)
    client = local(make_app(small))

    def chunks():  # no Content-Length: the server counts as it reads
        for _ in range(4):
            yield b" " * 2**19

    assert_refusal(client.post("/v1/search", content=chunks()), 413, "larger than 1 MiB")


def test_a_busy_model_is_a_503_with_retry_after_not_a_queue(service, photo_dir):
    busy = Service(service.collection, Limits(busy_wait_s=0.05, retry_after_s=7), extractor=service._make_extractor)
    client = local(make_app(busy))
    upload = {"files": {"image": ("b.png", (photo_dir / "blues" / "b3.png").read_bytes(), "image/png")}}
    assert client.post("/v1/search", **upload).status_code == 200
    with busy._model_lock:  # another request's forward pass, as the server's threads see it
        got = client.post("/v1/search", **upload)
        assert_refusal(got, 503, "The server is busy with another request that runs the model: try again in 7 s.")
        assert got.headers["retry-after"] == "7"
        assert client.get("/v1/similar", params={"path": "top.jpg"}).status_code == 200  # no model: not held up
    assert client.get("/v1/clusters", params={"k": 3}).status_code == 200
    with busy._collection_lock:  # a duplicates scan or a k-means under way
        for got in (client.get("/v1/duplicates", params={"threshold": 0.5}),
                    client.get("/v1/clusters", params={"k": 2})):
            assert_refusal(got, 503, "The server is busy with another duplicates or clusters computation: try "
                                     "again in 7 s.")
            assert got.headers["retry-after"] == "7"
        assert client.get("/v1/clusters", params={"k": 3}).status_code == 200  # answered from the cache


def test_a_deduplicated_search_looks_at_most_max_dedup_depth_deep(service, monkeypatch):
    shallow = Service(service.collection, Limits(max_dedup_depth=6), extractor=service._make_extractor)
    asked = []
    real = shallow.collection.query_examples
    monkeypatch.setattr(shallow.collection, "query_examples", lambda *a, **kw: asked.append(a[2]) or real(*a, **kw))
    client = local(make_app(shallow))
    got = client.post("/v1/search", json={"positive": ["reds/r2.jpg"], "k": 5, "deduplicate": 0.01}).json()
    assert asked == [6] and len(got["neighbors"]) == 5  # 4k = 20 wanted, 6 looked at
    client.post("/v1/search", json={"positive": ["reds/r2.jpg"], "k": 8, "deduplicate": 0.01})
    assert asked[-1] == 8  # never less than k
    assert client.get("/v1/info").json()["limits"]["max_dedup_depth"] == 6


def test_an_unexpected_failure_is_a_500_without_details(service, monkeypatch):
    client = local(make_app(service), raise_server_exceptions=False)
    monkeypatch.setattr(service, "info", lambda: open("/nonexistent/secret/path"))
    got = client.get("/v1/info")
    assert got.status_code == 500
    assert got.json() == {"error": "Internal error: the server log has the details."}


# --- who may ask --------------------------------------------------------------------------------------------

def test_bearer_token_is_required_when_configured(service):
    client = local(make_app(service, token="s3cret-token"))
    missing = client.get("/v1/info")
    assert_refusal(missing, 401, "This server needs a token: send 'Authorization: Bearer TOKEN'.")
    assert missing.headers["www-authenticate"] == "Bearer"
    assert_refusal(client.get("/v1/info", headers={"Authorization": "Bearer wrong"}), 401, "The token is not valid")
    assert_refusal(client.get("/v1/images/reds/r1.jpg/thumbnail"), 401, "needs a token")
    assert client.get("/v1/info", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
    assert client.get("/openapi.json").status_code == 200  # the API's description is not the collection


def test_no_token_is_asked_without_one(client):
    assert client.get("/v1/info", headers={"Authorization": "Bearer anything"}).status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_loopback_needs_no_token(host):
    check_listen(host, has_token=False, insecure_no_token=False)


def test_other_addresses_need_a_token_or_an_explicit_opt_out(built_index, tmp_path):
    with pytest.raises(ImgsimError, match="Refusing to listen on 0.0.0.0 without a token"):
        check_listen("0.0.0.0", has_token=False, insecure_no_token=False)
    check_listen("0.0.0.0", has_token=True, insecure_no_token=False)
    check_listen("192.168.1.10", has_token=False, insecure_no_token=True)
    out = subprocess.run([sys.executable, "-m", "imgsim", "serve", str(built_index), "--host", "0.0.0.0"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "error: Refusing to listen on 0.0.0.0 without a token" in out.stderr
    empty = tmp_path / "token.txt"
    empty.write_text("\n")
    out = subprocess.run([sys.executable, "-m", "imgsim", "serve", str(built_index), "--token-file", str(empty)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "must hold one token" in out.stderr


def test_without_a_token_only_the_servers_own_host_names_are_answered(service):
    """DNS rebinding: a page at evil.example re-pointed to 127.0.0.1 sends 'Host: evil.example'."""
    app = make_app(service)
    client = TestClient(app)
    for host in ("evil.example", "evil.example:8600", "127.0.0.1.evil.example", "testserver"):
        assert_refusal(client.get("/v1/info", headers={"Host": host}), 400,
                       f"This server does not answer to the host '{host.partition(':')[0]}': without a token it "
                       "answers to 127.0.0.1, ::1, localhost (add names with --allow-host or IMGSIM_ALLOWED_HOSTS).")
    for host in ("localhost", "localhost:8600", "127.0.0.1:8600", "[::1]:8600", "LOCALHOST"):
        assert client.get("/v1/info", headers={"Host": host}).status_code == 200, host
    lan = TestClient(make_app(service, allowed_hosts=["photos.lan"]))
    assert lan.get("/v1/info", headers={"Host": "photos.lan:8600"}).status_code == 200
    assert lan.get("/v1/info", headers={"Host": "localhost"}).status_code == 400  # the list given is the list
    assert TestClient(make_app(service, allowed_hosts=["*"])).get("/v1/info").status_code == 200
    # With a token a rebinding page has nothing to send: any Host is answered, the token still asked.
    guarded = TestClient(make_app(service, token="s3cret-token"))
    assert guarded.get("/v1/info", headers={"Host": "evil.example", "Authorization": "Bearer s3cret-token"}
                       ).status_code == 200


def test_server_hosts_are_loopback_the_bind_address_and_those_added(monkeypatch):
    monkeypatch.delenv("IMGSIM_ALLOWED_HOSTS", raising=False)
    assert server_hosts("127.0.0.1") == ["localhost", "127.0.0.1", "::1"]
    monkeypatch.setenv("IMGSIM_ALLOWED_HOSTS", "photos.lan, nas.local,")
    assert server_hosts("192.168.1.10", ["imgsim.example"]) == ["localhost", "127.0.0.1", "::1", "192.168.1.10",
                                                                "imgsim.example", "photos.lan", "nas.local"]


def test_cors_is_off_unless_origins_are_configured(service):
    preflight = {"Origin": "https://app.example.org", "Access-Control-Request-Method": "POST"}
    closed = local(make_app(service)).options("/v1/search", headers=preflight)
    assert "access-control-allow-origin" not in closed.headers
    opened = local(make_app(service, cors_origins=["https://app.example.org"])).options("/v1/search",
                                                                                         headers=preflight)
    assert opened.headers["access-control-allow-origin"] == "https://app.example.org"


def test_request_log_has_no_query_images_text_or_query_strings(client, photo_dir, caplog):
    caplog.set_level(logging.INFO, logger="imgsim.service")
    client.post("/v1/search", json={"text": "my private holiday"})
    client.post("/v1/search", files={"image": ("holiday.png", (photo_dir / "blues" / "b1.png").read_bytes())})
    client.get("/v1/similar", params={"path": "reds/r1.jpg", "k": 2})
    lines = [r.getMessage() for r in caplog.records if r.name == "imgsim.service"]
    assert lines[0].startswith("POST /v1/search 400 ") and lines[1].startswith("POST /v1/search 200 ")
    assert lines[2].startswith("GET /v1/similar 200 ")
    assert not any("holiday" in line or "r1.jpg" in line or "PNG" in line for line in lines)
