"""imgsim.client.Client against a real server (uvicorn on a loopback port) over a CLIP index: every operation,
the token, refusals as ClientError, and the LangChain / LlamaIndex adapters where those are installed."""

from __future__ import annotations

import io
import socket
import threading
import time

import pytest
import uvicorn
from PIL import Image

from imgsim.client import Client, ClientError
from imgsim.collection import Collection
from imgsim.service.http import make_app
from imgsim.service.operations import Service
from imgsim.service.results import text_json
from tests.conftest import make_photo

TOKEN = "test-token-9f2c"


@pytest.fixture(scope="module")
def service(clip_index, random_clip) -> Service:
    return Service(Collection.open(clip_index), extractor=lambda: random_clip)


@pytest.fixture(scope="module")
def url(service):
    """The API on a free loopback port, in a thread, for the module."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(make_app(service, token=TOKEN), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture(scope="module")
def client(url) -> Client:
    return Client(url, token=TOKEN)


def test_the_token_is_needed(url):
    with pytest.raises(ClientError, match="401: This server needs a token") as raised:
        Client(url).info()
    assert raised.value.status == 401
    with pytest.raises(ClientError, match="The token is not valid"):
        Client(url, token="guess").info()


def test_info_says_what_the_index_can_do(client):
    info = client.info()
    assert info["indexed"] == 12 and info["backbone"] == "clip"
    assert info["capabilities"] == {"text": True, "explain": False, "clusters": True, "previews": True}


def test_text_search_is_the_collections_answer(client, service, random_clip):
    got = client.search_text("a red circle on blue", k=3)
    result, embedded = service.collection.query_text("a red circle on blue", 3, model=lambda: random_clip)
    assert got == text_json(service.collection, embedded, result)


def test_image_searches(client, service, photo_dir, tmp_path):
    assert client.similar("reds/r1.jpg", k=3) == service.similar("reds/r1.jpg", 3)
    by_file = client.search_image(photo_dir / "reds" / "r1.jpg", k=3)  # uploaded: a local file, not a server path
    assert by_file["query"]["upload"]["indexed"] == "reds/r1.jpg"
    assert by_file["neighbors"] == client.similar("reds/r1.jpg", k=3)["neighbors"]
    new = make_photo(tmp_path / "new.png", seed=4242)
    uploaded = client.search_image(new.read_bytes(), k=4, max_distance=2)
    assert uploaded["query"]["upload"]["indexed"] is None and len(uploaded["neighbors"]) == 4
    assert uploaded["max_distance"] == 2
    more = client.more_like(["reds/r0.jpg", "blues/b0.png"], negative=["top.jpg"], k=2)
    assert more["query"] == ["reds/r0.jpg", "blues/b0.png"] and more["not"] == ["top.jpg"]
    vector = service.collection.index.vectors[5].tolist()
    assert client.search_vector(vector, k=1)["neighbors"][0]["path"] == service.collection.paths[5]


def test_thumbnails_duplicates_and_clusters(client, service):
    image = Image.open(io.BytesIO(client.thumbnail("blues/b2.png", size=40)))
    assert image.format == "JPEG" and max(image.size) == 40
    assert client.duplicates(0.5) == service.duplicates(0.5)
    clusters = client.clusters(k=2, central=1)
    assert clusters["k"] == 2 and all(len(c["central"]) == 1 for c in clusters["clusters"])


def test_refusals_raise_client_errors(client, url):
    with pytest.raises(ClientError, match="400: Per-cell explanations need a ResNet50 index") as raised:
        client.explain("reds/r0.jpg", "reds/r1.jpg")
    assert "\n" not in raised.value.message
    with pytest.raises(ClientError, match="404: No image 'missing.jpg' in this collection"):
        client.similar("missing.jpg")
    with pytest.raises(ClientError, match="k: Input should be less than or equal to 1000"):
        client.similar("reds/r0.jpg", k=10**6)
    free = socket.socket()
    free.bind(("127.0.0.1", 0))
    port = free.getsockname()[1]
    free.close()  # nothing listens there now
    with pytest.raises(ClientError, match="Cannot reach") as raised:
        Client(f"http://127.0.0.1:{port}", timeout=5).info()
    assert raised.value.status == 0


def test_langchain_retriever(client):
    pytest.importorskip("langchain_core", reason="LangChain is an optional extra (pip install langchain-core)")
    docs = client.langchain_retriever(k=2).invoke("a red circle")
    assert len(docs) == 2 and docs[0].page_content == docs[0].metadata["path"]
    assert docs[0].metadata["thumbnail_url"].endswith("/thumbnail")
    # The same images, ranks and distances as the client's own text search, each with its thumbnail's URL.
    found = client.search_text("a red circle", k=2)["neighbors"]
    assert [d.page_content for d in docs] == [n["path"] for n in found]
    assert [d.metadata for d in docs] == [{**n, "thumbnail_url": client.thumbnail_url(n["path"])} for n in found]


def test_llamaindex_retriever(client):
    pytest.importorskip("llama_index.core", reason="LlamaIndex is an optional extra (pip install llama-index-core)")
    nodes = client.llamaindex_retriever(k=2).retrieve("a red circle")
    assert len(nodes) == 2 and nodes[0].score == nodes[0].node.metadata["similarity"]
    found = client.search_text("a red circle", k=2)["neighbors"]
    assert [(x.node.id_, x.score, x.node.metadata) for x in nodes] == [(n["path"], n["similarity"], n) for n in found]
    assert [x.node.image_url for x in nodes] == [client.thumbnail_url(n["path"]) for n in found]
