"""API keys: the generation routes need one when keys are configured, the rest stay open; a
server without keys says so at start; each key's requests have cached prompt prefixes of their
own."""

from __future__ import annotations

from pathlib import Path

import httpx

from ..helpers import CHAT, GUARDED_AUTH, HELLO, MODEL, long_text


def test_api_keys(guarded: tuple[str, Path]) -> None:
    url, log = guarded
    body = {"model": MODEL, "messages": HELLO, "max_tokens": 2}
    with httpx.Client(base_url=url, timeout=30) as c:
        missing = c.post(CHAT, json=body)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["code"] == "invalid_api_key"
        wrong = c.post(CHAT, json=body, headers={"Authorization": "Bearer secret-inline-3"})
        assert wrong.status_code == 401
        native = c.post(f"/v1/inference/{MODEL}", json={"input": "Hi"})
        assert native.status_code == 401 and set(native.json()) == {"error"}
        for key in ("secret-inline-1", "secret-inline-2", "secret-from-file"):
            ok = c.post(CHAT, json=body, headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code == 200, key
        # Unauthenticated garbage is a 401, not a validation error that reveals the schema;
        # the key is checked before the body is read at all.
        assert c.post(CHAT, json={"nonsense": 1}).status_code == 401
        assert c.post(CHAT, content=b"{not json").status_code == 401
        for open_path in (
            "/v1/openai/models",
            "/health",
            "/health/live",
            "/health/ready",
            "/metrics",
        ):
            assert c.get(open_path).status_code == 200, open_path
    text = log.read_text(errors="replace")
    assert "API keys required (3 configured)" in text
    assert "secret-" not in text


def test_open_server_warns_at_start(server_log: Path, client: httpx.Client) -> None:
    assert "no API key configured" in server_log.read_text(errors="replace")


def test_each_key_has_its_own_cached_prefixes(guarded: tuple[str, Path]) -> None:
    url, log = guarded
    other = {"Authorization": "Bearer secret-inline-2"}
    system = long_text()
    with httpx.Client(base_url=url, timeout=60) as c:

        def cached(auth: dict[str, str], question: str) -> int:
            messages = [
                {"role": "system", "content": system},
                {"role": "user", "content": question},
            ]
            body = {"model": MODEL, "messages": messages, "max_tokens": 1}
            r = c.post(CHAT, json=body, headers=auth)
            assert r.status_code == 200, r.text
            return r.json()["usage"]["prompt_tokens_details"]["cached_tokens"]

        assert cached(GUARDED_AUTH, "one") == 0
        assert cached(GUARDED_AUTH, "two") > 0  # the same key shares
        # Another key's first request finds nothing of the first key's, however identical.
        assert cached(other, "one") == 0
        assert cached(other, "two") > 0
    # The partition is never written down: neither key nor salt in the log.
    text = log.read_text(errors="replace")
    assert "secret-inline-2" not in text and "cache_salt" not in text
