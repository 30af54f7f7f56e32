"""The MCP server (imgsim/service/mcp.py), through the SDK's in-memory client: its tools, their schemas, and a
call of each on a small index, with the HTTP API's answers and limits."""

from __future__ import annotations

import base64
import io
import json
import os
import sys
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from PIL import Image
from starlette.testclient import TestClient

from imgsim.collection import Collection
from imgsim.service.http import make_app
from imgsim.service.limits import Limits
from imgsim.service.mcp import make_server
from imgsim.service.operations import Service

ROOT = Path(__file__).resolve().parents[1]
TOOLS = {"collection_info", "search_text", "search_image", "similar_to", "get_image", "duplicates", "clusters",
         "explain"}


@pytest.fixture(scope="module")
def service(built_index, random_extractor) -> Service:
    return Service(Collection.open(built_index), extractor=lambda: random_extractor)


@pytest.fixture(scope="module")
def server(service):
    return make_server(service)


def call(server, tool: str, **arguments):
    """One tool call through the in-memory client."""
    async def go():
        async with Client(server) as client:
            return await client.call_tool(tool, arguments)
    return anyio.run(go)


def result_json(result) -> dict:
    assert not result.is_error, result.content[0].text
    assert [c.type for c in result.content] == ["text"]
    return json.loads(result.content[0].text)


def error_text(result, one_line: bool = True) -> str:
    """A tool error's message: one line when it is imgsim's; the SDK's argument checks print pydantic's report."""
    assert result.is_error
    text = result.content[0].text
    assert "Traceback" not in text and (not one_line or "\n" not in text), text
    return text


def test_tools_are_listed_with_descriptions_and_bounded_schemas(server):
    async def go():
        async with Client(server) as client:
            return (await client.list_tools()).tools
    tools = {t.name: t for t in anyio.run(go)}
    assert set(tools) == TOOLS
    for tool in tools.values():
        assert len(tool.description) > 60, tool.name  # enough for a model to choose the tool
        assert tool.input_schema["type"] == "object"
    k = tools["similar_to"].input_schema["properties"]["k"]
    assert (k["minimum"], k["maximum"], k["default"]) == (1, 1000, 10)
    assert tools["search_text"].input_schema["required"] == ["text"]
    assert set(tools["search_image"].input_schema["properties"]) == {"path", "image_base64", "k", "where", "near"}
    assert tools["explain"].input_schema["required"] == ["a", "b"]
    assert "relative to the collection" in tools["get_image"].input_schema["properties"]["path"]["description"]


def test_similar_to_and_search_image_answer_like_the_api(server, service):
    expected = service.similar("reds/r1.jpg", 4)
    assert result_json(call(server, "similar_to", path="reds/r1.jpg", k=4)) == expected
    assert result_json(call(server, "search_image", path="reds/r1.jpg", k=4)) == expected
    more = result_json(call(server, "similar_to", path="reds/r0.jpg", also_like=["blues/b2.png"], not_like=["top.jpg"],
                            k=3))
    assert more["query"] == ["reds/r0.jpg", "blues/b2.png"] and more["not"] == ["top.jpg"] and more["k"] == 3


def test_search_image_takes_any_image_in_base64(server, service, photo_dir):
    data = (photo_dir / "blues" / "b3.png").read_bytes()
    got = result_json(call(server, "search_image", image_base64=base64.b64encode(data).decode(), k=3))
    assert got["query"] == {"upload": {"bytes": len(data), "indexed": "blues/b3.png"}}
    assert got["neighbors"] == service.similar("blues/b3.png", 3)["neighbors"]
    assert "either path" in error_text(call(server, "search_image", k=3))
    assert "not valid base64" in error_text(call(server, "search_image", image_base64="%%%", k=3))


def test_get_image_is_mcp_image_content(server):
    result = call(server, "get_image", path="blues/b0.png", size=64)
    assert not result.is_error
    [content] = result.content
    assert content.type == "image" and content.mime_type == "image/jpeg"
    image = Image.open(io.BytesIO(base64.b64decode(content.data)))
    assert image.format == "JPEG" and max(image.size) == 64


def test_duplicates_clusters_and_explain(server, service):
    dup = result_json(call(server, "duplicates", threshold=0.6, max_groups=1))
    full = service.duplicates(0.6)
    assert dup["groups"] == full["groups"][:1] and dup["groups_total"] == len(full["groups"])
    clusters = result_json(call(server, "clusters", k=3, max_paths=2))
    assert clusters["k"] == 3 and sum(c["size"] for c in clusters["clusters"]) == 12
    assert all(len(c["paths"]) <= 2 for c in clusters["clusters"])
    explained = result_json(call(server, "explain", a="reds/r0.jpg", b="blues/b1.png"))
    assert explained == service.explain("reds/r0.jpg", "blues/b1.png")
    assert len(explained["cells"]) == 7 and all(len(row) == 7 for row in explained["cells"])
    info = result_json(call(server, "collection_info"))
    assert info["indexed"] == 12 and info["capabilities"]["text"] is False


def test_refusals_are_tool_errors_a_model_can_act_on(server, built_index, photo_dir):
    cases = [
        (call(server, "search_text", text="a red car"), "Text search needs a CLIP index", True),
        (call(server, "similar_to", path="../../etc/passwd"), "may not leave the collection", True),
        (call(server, "similar_to", path=str(photo_dir / "top.jpg")), "is absolute", True),
        (call(server, "get_image", path="nope.jpg"), "No image 'nope.jpg' in this collection", True),
        (call(server, "similar_to", path="top.jpg", k=5000), "less than or equal to 1000", False),
        (call(server, "duplicates", threshold=7), "less than or equal to 1", False),
        (call(server, "duplicates", threshold=2), "less than or equal to 1", False),
        (call(server, "similar_to", path="top.jpg", also_like=["top.jpg"] * 40), "at most 32 items", False),
    ]
    for result, match, ours in cases:
        text = error_text(result, one_line=ours)
        assert match in text, text
        assert str(built_index) not in text


def tool_schemas(server) -> dict:
    async def go():
        async with Client(server) as client:
            return (await client.list_tools()).tools
    return {t.name: t.input_schema["properties"] for t in anyio.run(go)}


def test_the_search_tools_take_the_apis_metadata_filters(server, service):
    http = TestClient(make_app(service), base_url="http://localhost")
    where = ["folder = reds", "width >= 100"]
    expected = service.similar("reds/r1.jpg", 4, where=where)
    assert [n["metadata"]["folder"] for n in expected["neighbors"]] == ["reds"] * 4 and expected["where"] == where
    assert result_json(call(server, "search_image", path="reds/r1.jpg", k=4, where=where)) == expected
    assert result_json(call(server, "similar_to", path="reds/r1.jpg", k=4, where=where)) == expected
    assert http.get("/v1/similar", params={"path": "reds/r1.jpg", "k": 4, "where": where}).json() == expected
    more = result_json(call(server, "similar_to", path="reds/r0.jpg", also_like=["blues/b2.png"], k=6,
                            where=["folder in [blues, '']"], max_distance=1.5))
    assert more == http.post("/v1/search", json={"positive": ["reds/r0.jpg", "blues/b2.png"], "k": 6,
                                                  "where": ["folder in [blues, '']"], "max_distance": 1.5}).json()
    nowhere = result_json(call(server, "similar_to", path="top.jpg", near="48.85,2.35,10"))
    assert nowhere["near"] == "48.85,2.35,10" and nowhere["neighbors"] == []
    # A bad filter: the HTTP API's message, word for word.
    for clauses, near in ((["widht > 3"], None), (["width ~ 3"], None), ([], "91,0,5"), (["x"] * 17, None)):
        refused = http.get("/v1/similar", params={"path": "reds/r1.jpg", "where": clauses,
                                                  **({"near": near} if near else {})})
        assert refused.status_code == 400
        for tool in ("similar_to", "search_image"):
            text = error_text(call(server, tool, path="reds/r1.jpg", where=clauses, near=near))
            assert text == f"Error executing tool {tool}: {refused.json()['error']}", text
    assert "unknown field 'widht' (did you mean 'width'?)" in error_text(
        call(server, "search_image", path="reds/r1.jpg", where=["widht > 3"]))


def test_one_set_of_limits_bounds_both_transports(service):
    """Limits (imgsim/service/limits.py) are the bounds of the MCP tools' schemas and of the HTTP API alike."""
    limits = Limits(max_k=7, max_examples=3, max_threshold=0.5, max_clusters=4, max_text_chars=20)
    small = Service(service.collection, limits, extractor=service._make_extractor)
    server, http = make_server(small), TestClient(make_app(small), base_url="http://localhost")
    tools = tool_schemas(server)
    spec = http.get("/openapi.json").json()

    def query_param(path: str, name: str) -> dict:
        [p] = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == name]
        return p["schema"]

    body = spec["paths"]["/v1/search"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert tools["similar_to"]["k"]["maximum"] == tools["search_image"]["k"]["maximum"] == 7
    assert query_param("/v1/similar", "k")["maximum"] == 7
    assert tools["similar_to"]["also_like"]["maxItems"] == tools["similar_to"]["not_like"]["maxItems"] == 3
    assert body["positive"]["maxItems"] == body["negative"]["maxItems"] == 3
    assert "at most 3 images in all" in tools["similar_to"]["also_like"]["description"]
    assert tools["duplicates"]["threshold"]["maximum"] == 0.5
    assert query_param("/v1/duplicates", "threshold")["maximum"] == 0.5
    assert tools["clusters"]["k"]["anyOf"][0]["maximum"] == 4
    assert query_param("/v1/clusters", "k")["anyOf"][0]["maximum"] == 4
    assert tools["search_text"]["text"]["maxLength"] == 20
    # Three examples with path: accepted by the schema, refused in all, with one message.
    too_many = "At most 3 positive and negative images in all."
    text = error_text(call(server, "similar_to", path="top.jpg", also_like=["reds/r0.jpg", "reds/r1.jpg"],
                           not_like=["blues/b1.png"]))
    assert text == f"Error executing tool similar_to: {too_many}"
    got = http.post("/v1/search", json={"positive": ["top.jpg", "reds/r0.jpg", "reds/r1.jpg"],
                                        "negative": ["blues/b1.png"]})
    assert (got.status_code, got.json()) == (400, {"error": too_many})
    assert result_json(call(server, "similar_to", path="top.jpg", also_like=["reds/r0.jpg"],
                            not_like=["blues/b1.png"], k=7))["k"] == 7
    assert "less than or equal to 7" in error_text(call(server, "similar_to", path="top.jpg", k=8), one_line=False)
    assert http.get("/v1/similar", params={"path": "top.jpg", "k": 8}).json() == {
        "error": "k: Input should be less than or equal to 7."}


def test_a_failure_that_is_not_a_refusal_names_no_server_path(server, service, monkeypatch, caplog, tmp_path):
    secret = tmp_path / "private" / "index.npy"

    def broken(*args, **kwargs):
        raise OSError(2, "No such file or directory", str(secret))

    for name, tool, arguments in (("info", "collection_info", {}), ("similar", "search_image", {"path": "top.jpg"}),
                                  ("duplicates", "duplicates", {"threshold": 0.5})):
        monkeypatch.setattr(service, name, broken)
        with caplog.at_level("ERROR", logger="imgsim.service"):
            text = error_text(call(server, tool, **arguments))
        assert text == f"Error executing tool {tool}: Internal error: the server log has the details."
        assert str(tmp_path) not in text
        [record] = [r for r in caplog.records if r.name == "imgsim.service"]
        assert record.getMessage() == f"MCP tool {tool} failed" and str(secret) in str(record.exc_info[1])
        caplog.clear()


def test_duplicates_say_when_the_scan_stopped(service):
    capped = make_server(Service(service.collection, Limits(max_pairs=3), extractor=service._make_extractor))
    got = result_json(call(capped, "duplicates", threshold=1.0))
    assert (got["truncated"], got["max_pairs"]) == (True, 3) and "incomplete" in got["note"]
    assert "truncated" not in result_json(call(capped, "duplicates", threshold=0.0))


def test_mcp_command_serves_on_stdio(built_index):
    """``python -m imgsim mcp INDEX`` as a desktop client starts it: a subprocess speaking on stdin/stdout."""
    params = StdioServerParameters(command=sys.executable, args=["-m", "imgsim", "mcp", str(built_index)],
                                   env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=str(ROOT))

    async def go():
        async with Client(params) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            return tools, await client.call_tool("similar_to", {"path": "top.jpg", "k": 2})
    tools, result = anyio.run(go)
    assert tools == TOOLS
    assert [n["path"] for n in result_json(result)["neighbors"]][0] == "top.jpg"
