"""The route table, and what is derived from it: which route a path is, how it is dispatched
(the method, the key, the model its card serves), and the OpenAPI document. Cards decide which
APIs a model offers. These checks happen before any engine is involved, so the app is built
without starting one (its lifespan does not run here)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fastapi.testclient import TestClient

from deepinfra_serve.config.cards import load_card
from deepinfra_serve.engine.errors import APIError
from deepinfra_serve.engine.served_model import ServedModel
from deepinfra_serve.http.app import create_app
from deepinfra_serve.http.auth import ApiKeys, KeyEntry
from deepinfra_serve.http.route_table import RouteTable
from deepinfra_serve.http.routes import ROUTES, TABLE

from ..helpers import CARDS

PYGMALION = load_card(CARDS / "pygmalion-13b-4bit-128g.yaml")
MYTHOMAX = load_card(CARDS / "mythomax-l2-13b-turbo.yaml")


def _no_engine() -> ServedModel:
    raise AssertionError("no engine is started in these tests")


@pytest.fixture
def pygmalion() -> TestClient:
    return TestClient(create_app(PYGMALION, _no_engine))


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/openai/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
        ("/v1/openai/completions", {"prompt": "hi"}),
    ],
)
def test_native_only_model_refuses_the_openai_routes(
    pygmalion: TestClient, path: str, body: dict[str, object]
) -> None:
    r = pygmalion.post(path, json={"model": PYGMALION.name, **body})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "api_not_supported"
    assert f"/v1/inference/{PYGMALION.name}" in error["message"]


def test_native_only_model_is_not_listed_on_the_openai_api(pygmalion: TestClient) -> None:
    assert pygmalion.get("/v1/openai/models").json() == {"object": "list", "data": []}


def test_the_native_route_takes_the_model_name_as_a_path(pygmalion: TestClient) -> None:
    # Routed to the native API (the engine is not started here, hence 503, in its shape).
    r = pygmalion.post(f"/v1/inference/{PYGMALION.name}", json={"input": "hi"})
    assert r.status_code == 503
    assert set(r.json()) == {"error"}


def test_openai_only_model_refuses_the_native_route() -> None:
    card = MYTHOMAX.model_copy(update={"apis": ["openai"]})
    client = TestClient(create_app(card, _no_engine))
    r = client.post(f"/v1/inference/{card.name}", json={"input": "hi"})
    assert r.status_code == 400
    assert r.json() == {"error": f"The model `{card.name}` is served through /v1/openai only"}


# The route table: classification, dispatch and the OpenAPI document all come from it.


SAMPLES = {
    "model": "Owner/Name",
    "file_id": "file-1",
    "batch_id": "batch_1",
    "lora_model_name": "Owner/Name",
}


def test_every_path_of_a_route_is_classified_as_that_route() -> None:
    for route in ROUTES:
        for template, _ in route.paths:
            path = template
            for name in route.parameters:
                path = path.replace(f"{{{name}:path}}", SAMPLES[name]).replace(
                    f"{{{name}}}", SAMPLES[name]
                )
            assert TABLE.classify(route.method, path) is route
            assert route.match(path) == {name: SAMPLES[name] for name in route.parameters}


def test_a_method_and_path_template_declared_twice_raises() -> None:
    [route] = [r for r in ROUTES if r.label == "chat"]
    again = replace(route, description="the same method and path once more")
    with pytest.raises(ValueError, match="POST /v1/openai/chat/completions: declared twice"):
        RouteTable((*ROUTES, again))
    # Another name for the same parameter is the same template.
    [native] = [r for r in ROUTES if r.label == "inference"]
    with pytest.raises(ValueError, match="declared twice"):
        RouteTable((*ROUTES, replace(native, path="/{name:path}")))
    # Another method on the same path is another route, and the path allows both.
    deleting = replace(route, method="DELETE", body=None, admitted=False)
    table = RouteTable((*ROUTES, deleting))
    assert table.classify("DELETE", "/v1/openai/chat/completions") is deleting
    assert table.classify("POST", "/v1/openai/chat/completions") is route
    assert table.allowed("/v1/openai/chat/completions") == ("POST", "DELETE")


def test_a_segment_parameter_matches_one_segment_and_a_path_parameter_the_rest() -> None:
    [info] = [r for r in ROUTES if r.path == "/{model:path}" and r.method == "GET"]
    by_id = replace(info, path="/files/{file_id}/content")
    assert by_id.match("/models/files/f-1/content") == {"file_id": "f-1"}
    assert by_id.match("/models/files/a/b/content") is None
    assert info.match("/models/Owner/Name:2") == {"model": "Owner/Name:2"}
    assert info.match("/models/") is None


@pytest.mark.parametrize(
    "path",
    ["/health", "/metrics", "/docs", "/v1/inference/", "/v1/openai/chat", "/v2/chat/completions"],
)
def test_paths_no_route_serves_are_left_to_fastapi(path: str) -> None:
    assert TABLE.classify("GET", path) is None and TABLE.classify("POST", path) is None


def test_the_openapi_document_declares_the_table_and_nothing_else() -> None:
    doc = TestClient(create_app(MYTHOMAX, _no_engine)).get("/openapi.json").json()
    declared = {route.family.mounts[0] + route.path.replace(":path}", "}") for route in ROUTES}
    served = ("/v1/", "/anthropic/", "/models/", "/lora-model")
    assert {p for p in doc["paths"] if p.startswith(served)} == set(declared)
    for route in ROUTES:
        path = route.family.mounts[0] + route.path.replace(":path}", "}")
        operation = doc["paths"][path][route.method.lower()]
        assert operation["tags"] == [route.family.name]
        assert operation["description"] == route.description
        assert set(operation["responses"]) == {"200", *map(str, route.errors)}
        for status in route.errors:
            schema = operation["responses"][str(status)]["content"]["application/json"]["schema"]
            assert schema["$ref"].endswith("/" + route.family.error_model.__name__)
        content = operation["responses"]["200"]["content"]
        assert ("text/event-stream" in content) == route.streams
        if route.raw is not None:
            assert list(content) == [route.raw]
        else:
            assert content["application/json"]["schema"]["$ref"].endswith(route.response.__name__)
        if route.upload:
            assert list(operation["requestBody"]["content"]) == ["multipart/form-data"]
        elif route.body is None:
            assert "requestBody" not in operation
        else:
            body = operation["requestBody"]["content"]["application/json"]["schema"]
            assert body["$ref"].endswith("/" + route.body.__name__)
        names = [p["name"] for p in operation.get("parameters", [])]
        assert names == [*route.parameters, *route.query]


def test_a_wrong_method_is_405_naming_the_allowed_one_in_the_routes_shape(
    pygmalion: TestClient,
) -> None:
    native = pygmalion.get(f"/v1/inference/{PYGMALION.name}")
    assert native.status_code == 405 and native.headers["allow"] == "POST"
    assert native.json() == {"error": "Method Not Allowed"}
    models = pygmalion.post("/v1/openai/models", json={})
    assert models.status_code == 405 and models.headers["allow"] == "GET"
    assert models.json()["error"]["code"] == "method_not_allowed"


def test_a_route_with_a_body_must_pass_admission() -> None:
    with pytest.raises(ValueError, match="must pass admission"):
        RouteTable((replace(ROUTES[0], admitted=False),))


def test_a_route_reads_its_key_from_the_headers_it_names() -> None:
    keys = ApiKeys([KeyEntry("k1")])
    keys.check([(b"authorization", b"Bearer k1")], ("authorization",))
    keys.check([(b"x-api-key", b"k1")], ("x-api-key", "authorization"))
    with pytest.raises(APIError) as missing:
        keys.check([(b"authorization", b"Bearer k1")], ("x-api-key",))
    assert missing.value.status == 401
    assert missing.value.message == "Missing API key: send x-api-key: <key>"
    with pytest.raises(APIError) as wrong:
        keys.check([(b"x-api-key", b"k2")], ("x-api-key",))
    assert wrong.value.message == "Invalid API key"
