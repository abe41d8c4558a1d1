"""The usage ledger on the real engine, on both stores: the guarded server (SQLite, two keys)
and the session's server (PostgreSQL, open). A mixed run (chat, streamed completions, native,
Messages, a LoRA adapter, priority and flex, a client's own X-Request-ID, a webhook job, a batch)
is recorded request by request with the numbers the client, the access line and Prometheus saw;
`POST /v1/request-costs` prices each id a client saw, for its own key only; `/v1/me/usage` and
`deepinfra-serve usage` add up to the same; a bad query is refused naming its field. With the
session's PostgreSQL stopped under load the server serves on, the queue holds what its bound
allows, counts what it forced out, and drains once the store is back."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from sqlalchemy import func, select

from deepinfra_serve.engine.call import Call, Outcome
from deepinfra_serve.engine.errors import APIError
from deepinfra_serve.observability.record import RequestRecord
from deepinfra_serve.store.database import Store
from deepinfra_serve.store.tables import usage_daily, usage_requests
from deepinfra_serve.usage.routes import UsageServices, my_usage, request_costs
from deepinfra_serve.usage.schema import RequestCostQuery

from ..helpers import (
    COMPLETIONS,
    HELLO,
    INFERENCE,
    MODEL,
    SESSION_LEDGER_QUEUE,
    Receiver,
    batch_line,
    eventually,
    json_log,
    jsonl,
    metric_sum,
    postgres_stopped,
    receiving,
    upload_batch,
    wait_batch,
)

PIRATE = "deepinfra-serve/tiny-random-llama-pirate"  # the tiny card's LoRA adapter
KEY_A, KEY_B = "secret-inline-1", "secret-inline-2"  # two of the guarded server's keys
COST = "deepinfra_estimated_cost_usd_total"


@dataclass
class Ledgered:
    """A server whose ledger is checked, and where its store is."""

    url: str
    keys: list[str | None]  # None: an open server, one tenant
    store_url: str
    log: Path


@dataclass
class Billed:
    """One request as its client saw it: every id it was answered with, and its cost."""

    request_id: str
    ids: list[str]
    estimated_cost: float
    key: str | None
    adapter: str | None = None
    tier: str = "default"
    seen: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(params=["sqlite", "postgresql"])
def ledgered(request: pytest.FixtureRequest) -> Ledgered:
    if request.param == "sqlite":
        url, log = request.getfixturevalue("guarded")
        data = log.parent / f"data-{url.rsplit(':', 1)[1]}"
        return Ledgered(url, [KEY_A, KEY_B], f"sqlite:///{data / 'store.sqlite3'}", log)
    store_url = request.getfixturevalue("session_store_url")
    if store_url is None:
        pytest.skip("Debian's postgresql is not installed here (`make test` installs it)")
    return Ledgered(
        request.getfixturevalue("base_url"),
        [None],
        store_url,
        request.getfixturevalue("server_log"),
    )


@pytest.fixture
def receiver() -> Any:
    with receiving() as r:
        yield r


def _headers(key: str | None) -> dict[str, str]:
    return {} if key is None else {"Authorization": f"Bearer {key}"}


def _strip(prefix: str, text: str) -> str:
    assert text.startswith(prefix), text
    return text[len(prefix) :]


def _mixed_run(url: str, key: str | None, receiver: Receiver, batch: bool) -> list[Billed]:
    """Every API and tier once for `key`; what each request was billed, as its client saw it."""
    out: list[Billed] = []
    headers = _headers(key)
    api_key = key or "none"
    with (
        openai.OpenAI(base_url=f"{url}/v1/openai", api_key=api_key, max_retries=0) as oai,
        httpx.Client(base_url=url, headers=headers, timeout=60) as http,
    ):
        for tier in ("default", "priority", "flex"):
            raw = oai.chat.completions.with_raw_response.create(
                model=MODEL, messages=HELLO, max_tokens=3, service_tier=tier
            )
            chat = raw.parse()
            assert chat.usage is not None and chat.usage.model_extra is not None
            rid = raw.headers["x-request-id"]
            assert chat.id == f"chatcmpl-{rid}"
            cost = chat.usage.model_extra["estimated_cost"]
            out.append(Billed(rid, [chat.id, rid], cost, key, tier=tier))
        # The client's own X-Request-ID is the request's id.
        own = f"client-{uuid.uuid4().hex}"
        answer = http.post(
            "/v1/openai/chat/completions",
            json={"model": MODEL, "messages": HELLO, "max_tokens": 2},
            headers={"X-Request-ID": own},
        ).json()
        out.append(Billed(own, [own, answer["id"]], answer["usage"]["estimated_cost"], key))
        chunks = list(
            oai.completions.create(
                model=MODEL,
                prompt="Once",
                max_tokens=4,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        usage = chunks[-1].usage
        assert usage is not None and usage.model_extra is not None
        rid = _strip("cmpl-", chunks[0].id)
        out.append(Billed(rid, [chunks[0].id], usage.model_extra["estimated_cost"], key))
        pirate = http.post(COMPLETIONS, json={"model": PIRATE, "prompt": "Ahoy", "max_tokens": 3})
        body = pirate.json()
        out.append(
            Billed(
                _strip("cmpl-", body["id"]),
                [body["id"]],
                body["usage"]["estimated_cost"],
                key,
                adapter=PIRATE,
            )
        )
        native = http.post(INFERENCE, json={"input": "Hello", "max_new_tokens": 3}).json()
        rid = native["request_id"]
        out.append(Billed(rid, [rid], native["inference_status"]["cost"], key))
        with anthropic.Anthropic(base_url=f"{url}/anthropic", api_key=api_key) as claude:
            message = claude.messages.create(
                model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "Hello!"}]
            )
        assert message.usage.model_extra is not None
        rid = _strip("msg_", message.id)
        out.append(Billed(rid, [message.id], message.usage.model_extra["estimated_cost"], key))
        # A webhook job: billed when its generation ends, under the id it was answered with.
        queued = http.post(
            INFERENCE, json={"input": "Hi", "max_new_tokens": 3, "webhook": receiver.url}
        ).json()
        rid = queued["request_id"]
        receiver.wait_for(lambda: any(b["request_id"] == rid for b in receiver.bodies))
        [hooked] = [b for b in receiver.bodies if b["request_id"] == rid]
        out.append(Billed(rid, [rid], hooked["inference_status"]["cost"], key))
        if batch:
            lines = [
                batch_line(
                    f"u{i}", "/v1/completions", model=MODEL, prompt=f"line {i}", max_tokens=3
                )
                for i in range(2)
            ]
            done = wait_batch(oai, upload_batch(oai, lines, "/v1/completions").id)
            assert done.status == "completed" and done.output_file_id is not None
            for line in jsonl(oai.files.content(done.output_file_id).text):
                response = line["response"]
                rid = response["request_id"]
                ids = [line["id"], rid, response["body"]["id"]]
                assert line["id"] == f"batch_req_{rid}"
                cost = response["body"]["usage"]["estimated_cost"]
                out.append(Billed(rid, ids, cost, key, tier="batch"))
    return out


def _cost(url: str) -> float:
    return metric_sum(httpx.get(f"{url}/metrics").text, COST, model=MODEL)


def _rows(store_url: str, request_ids: list[str]) -> dict[str, Any]:
    store = Store.open(store_url, Path("/nonexistent"))
    try:
        c = usage_requests.c
        with store.engine.connect() as conn:
            rows = conn.execute(select(usage_requests).where(c.request_id.in_(request_ids))).all()
        by_id = {row.request_id: row for row in rows}
        assert len(by_id) == len(rows), "a request recorded twice"
        return by_id
    finally:
        store.close()


def _owner(key: str | None) -> str:
    return "" if key is None else hashlib.sha256(key.encode()).hexdigest()


def test_every_billed_request_is_in_the_ledger_as_its_client_saw_it(
    ledgered: Ledgered, receiver: Receiver
) -> None:
    url = ledgered.url
    before = _cost(url)
    billed = [
        b
        for i, key in enumerate(ledgered.keys)
        for b in _mixed_run(url, key, receiver, batch=i == 0)
    ]
    ids = [b.request_id for b in billed]
    assert len(set(ids)) == len(ids)
    eventually(lambda: len(_rows(ledgered.store_url, ids)) == len(ids), 20, "the ledger's rows")
    rows = _rows(ledgered.store_url, ids)
    after = _cost(url)

    # Each row is what its client was billed, to the 1e-12 USD; together, what Prometheus saw.
    for b in billed:
        row = rows[b.request_id]
        assert row.cost_pico_usd == round(b.estimated_cost * 1e12), b
        assert (row.owner, row.model, row.adapter, row.tier) == (
            _owner(b.key),
            MODEL,
            b.adapter,
            b.tier,
        )
        assert row.prompt_tokens > 0 and row.completion_tokens > 0
    assert {r.via for r in rows.values()} == {"http", "background", "batch"}
    assert sum(r.cost_pico_usd for r in rows.values()) == round((after - before) * 1e12)
    # And what its access line said.
    logged = {
        line["request_id"]: line["estimated_cost"]
        for line in json_log(ledgered.log, '"estimated_cost"')
        if line.get("request_id") in rows and line["estimated_cost"]
    }
    assert logged == {b.request_id: b.estimated_cost for b in billed}

    # DeepInfra's request costs: each id a client saw, priced for its own key only.
    for key in ledgered.keys:
        own = [b for b in billed if b.key == key]
        asked = [i for b in own for i in b.ids] + ["no-such-request"]
        answer = httpx.post(
            f"{url}/v1/request-costs", json={"requestIds": asked}, headers=_headers(key)
        )
        assert answer.status_code == 200, answer.text
        priced = {item["requestId"]: item["costNanoUsd"] for item in answer.json()["requests"]}
        assert priced == {i: round(b.estimated_cost * 1e9) for b in own for i in b.ids}
        others = [i for b in billed if b.key != key for i in b.ids]
        if others:
            theirs = httpx.post(
                f"{url}/v1/request-costs", json={"requestIds": others}, headers=_headers(key)
            )
            assert theirs.json() == {"requests": []}

    # The daily rows: /v1/me/usage and the operator's report agree with the request rows.
    today = datetime.now(UTC).date().isoformat()
    report = subprocess.run(
        [sys.executable, "-m", "deepinfra_serve.cli", "usage", "--format", "csv"],
        env={"DEEPINFRA_SERVE_STORE_URL": ledgered.store_url, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    invoice = list(csv.DictReader(io.StringIO(report.stdout)))
    store = Store.open(ledgered.store_url, Path("/nonexistent"))
    try:
        with store.engine.connect() as conn:
            c, d = usage_requests.c, usage_daily.c
            for key in ledgered.keys:
                owner = _owner(key)
                day_start = datetime.fromisoformat(today).replace(tzinfo=UTC).timestamp()
                requests_pico = int(
                    conn.execute(
                        select(func.sum(c.cost_pico_usd)).where(
                            c.owner == owner, c.created_at >= day_start
                        )
                    ).scalar()
                )
                daily_pico = int(
                    conn.execute(
                        select(func.sum(d.cost_pico_usd)).where(d.owner == owner, d.day == today)
                    ).scalar()
                )
                assert daily_pico == requests_pico and daily_pico > 0
                mine = httpx.get(
                    f"{url}/v1/me/usage", params={"from": today}, headers=_headers(key)
                ).json()
                assert mine["to"] == today and mine["from"] == today
                assert mine["estimated_cost"] == round(daily_pico / 1e12, 12)
                assert {(u["model"], u["service_tier"]) for u in mine["usage"]} >= {
                    (MODEL, "default"),
                    (MODEL, "priority"),
                    (MODEL, "flex"),
                    (PIRATE, "default"),
                }
                lines = [r for r in invoice if r["key"] == owner and r["day"] == today]
                assert sum(Decimal(r["cost_usd"]) for r in lines) == Decimal(daily_pico).scaleb(-12)
    finally:
        store.close()


def test_bad_usage_queries_get_a_4xx_naming_the_field(guarded: tuple[str, Path]) -> None:
    url, _ = guarded
    with httpx.Client(base_url=url, headers=_headers(KEY_A), timeout=30) as client:
        too_many = client.post("/v1/request-costs", json={"requestIds": ["x"] * 1001})
        assert too_many.status_code == 422 and "requestIds" in too_many.json()["error"]
        assert client.post("/v1/request-costs", json={}).status_code == 422
        anonymous = httpx.post(f"{url}/v1/request-costs", json={"requestIds": ["x"]})
        assert anonymous.status_code == 401
        for params, field in (
            ({"from": "2026-13-01"}, "from"),
            ({"to": "yesterday"}, "to"),
            ({"from": "2026-12-08", "to": "2026-12-07"}, "from"),
            ({"from": "2025-01-01", "to": "2026-12-07"}, "from"),  # past 366 days
        ):
            refused = client.get("/v1/me/usage", params=params)
            assert refused.status_code == 400, (params, refused.text)
            assert refused.json()["error"].startswith(f"{field}:"), refused.text


def test_with_the_store_stopped_requests_are_served_and_the_queue_drains_once_it_is_back(
    base_url: str, session_store_url: str | None
) -> None:
    if session_store_url is None:
        pytest.skip("Debian's postgresql is not installed here (`make test` installs it)")
    metrics = lambda: httpx.get(f"{base_url}/metrics").text  # noqa: E731
    ledger = lambda name: metric_sum(metrics(), f"deepinfra_ledger_records_{name}", model=MODEL)  # noqa: E731
    written, dropped = ledger("written_total"), ledger("dropped_total")
    first = more = SESSION_LEDGER_QUEUE * 5 // 8  # 40 + 40: over the bound of 64

    async def load(n: int) -> list[str]:
        body = {"model": MODEL, "prompt": "Hi", "max_tokens": 1}
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as ac:
            answers = await asyncio.gather(*(ac.post(COMPLETIONS, json=body) for _ in range(n)))
        assert [a.status_code for a in answers] == [200] * n  # served: the store is not needed
        return [a.headers["x-request-id"] for a in answers]

    with postgres_stopped(session_store_url):
        held = asyncio.run(load(first))
        eventually(lambda: ledger("queued") == first, 15, "the first entries queued")
        assert ledger("dropped_total") == dropped
        time.sleep(0.5)
        forced_out = asyncio.run(load(more))
        over = first + more - SESSION_LEDGER_QUEUE
        eventually(lambda: ledger("dropped_total") - dropped == over, 15, "the overflow counted")
        assert ledger("written_total") == written
    eventually(lambda: ledger("queued") == 0, 30, "the queue drained")
    assert ledger("written_total") - written == SESSION_LEDGER_QUEUE
    # The bound forced out the oldest, entries of the first requests (in the order they ended):
    # every one of the later requests is recorded, and all but `over` of the first.
    rows = _rows(session_store_url, held + forced_out)
    assert set(forced_out) <= set(rows)
    assert len(set(held) & set(rows)) == first - over


def test_a_server_that_keeps_no_ledger_says_so(tmp_path: Path) -> None:
    """With `USAGE_LEDGER=false` the usage routes answer 404, in DeepInfra's shape."""
    store = Store.open("", tmp_path)
    services = UsageServices(store, kept=False)

    def call(body: Any) -> Call[UsageServices, Any]:
        async def no_detach(_: Any) -> Outcome:
            raise AssertionError("the usage routes detach nothing")

        return Call(services, body, {}, RequestRecord(request_id="r", model=MODEL), no_detach)

    try:
        for run in (
            lambda: request_costs(call(RequestCostQuery(requestIds=["x"]))),
            lambda: my_usage(call(None)),
        ):
            with pytest.raises(APIError) as refused:
                asyncio.run(run())
            assert refused.value.status == 404 and "usage_ledger" in str(refused.value)
    finally:
        store.close()
