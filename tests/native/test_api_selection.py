"""Cards decide which APIs a model offers. These checks happen before any engine is involved,
so the app is built without starting one (its lifespan does not run here)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from deepinfra_serve.config.cards import load_card
from deepinfra_serve.engine.served_model import ServedModel
from deepinfra_serve.http.app import create_app

from ..server import CARDS

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
