"""Replicas come and go behind the front door: loading, killed, draining."""

from __future__ import annotations

import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx

from ..helpers import FLEET_KEY as KEY
from ..helpers import MODEL as LLAMA
from ..helpers import RunningFleet, sse_lines

AUTH = {"Authorization": f"Bearer {KEY}"}
LLAMA_0, LLAMA_1 = "deepinfra-serve-tiny-random-llama-0", "deepinfra-serve-tiny-random-llama-1"


def chat(fleet: RunningFleet, i: int) -> httpx.Response:
    body = {
        "model": LLAMA,
        "max_tokens": 2,
        "messages": [{"role": "user", "content": f"Request {i} while replicas come and go"}],
    }
    return httpx.post(
        f"{fleet.url}/v1/openai/chat/completions", json=body, headers=AUTH, timeout=60
    )


def live(fleet: RunningFleet, name: str) -> bool:
    try:
        return httpx.get(f"{fleet.replicas[name]}/health/live", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def new_process(fleet: RunningFleet, name: str, old_pid: int, within_s: float = 60) -> int:
    """The pid of the process supervisord started in place of `old_pid`, once it serves HTTP."""
    deadline = time.monotonic() + within_s
    while True:
        assert time.monotonic() < deadline, f"{name} was not restarted"
        pid = fleet.pid(name)
        if pid not in (0, old_pid) and live(fleet, name):
            return pid
        time.sleep(0.1)


def test_killed_and_loading_replicas_get_no_requests(fleet: RunningFleet) -> None:
    statuses: list[int] = []
    # Requests at whose end the replica was ready: it may have turned ready before or while
    # such a request was sent (the loop's own check came before it), and then taken it.
    straddled = 0

    def send_while_loading() -> None:
        nonlocal straddled
        statuses.append(chat(fleet, len(statuses)).status_code)
        straddled += fleet.ready(LLAMA_1)

    # The replica dies whole, engine processes included, as a crashed container would: its
    # process group (supervisord gives each program its own).
    first = fleet.pid(LLAMA_1)
    assert first  # 0 would signal the test's own process group
    os.killpg(first, signal.SIGKILL)
    # supervisord starts it again; while it loads, the front door sends everything to replica 0.
    second = new_process(fleet, LLAMA_1, first)
    assert not fleet.ready(LLAMA_1)
    for _ in range(5):
        send_while_loading()
    # Killed again mid-load: still nothing lost.
    os.killpg(second, signal.SIGKILL)
    third = new_process(fleet, LLAMA_1, second)
    # Paced: on two cores, requests sent back to back starve the loading replica of the CPU
    # it loads with (once, four minutes to get ready).
    deadline = time.monotonic() + 240
    while not fleet.ready(LLAMA_1):
        send_while_loading()
        assert time.monotonic() < deadline, "the replica never got ready"
        time.sleep(0.2)
    assert set(statuses) == {200}, statuses
    assert len(statuses) >= 10
    assert third != second
    # The process that loaded got none of the requests sent while it was loading.
    assert fleet.metric(LLAMA_1, "deepinfra_requests_total", api="chat") <= straddled <= 1
    # Once ready it takes its share again.
    before = fleet.metric(LLAMA_1, "deepinfra_requests_total", api="chat")
    time.sleep(2.5)  # the front door's health check (every second) sees it ready
    for i in range(16):
        assert chat(fleet, 1000 + i).status_code == 200
    assert fleet.metric(LLAMA_1, "deepinfra_requests_total", api="chat") - before >= 2


def test_sigterm_on_a_replica_drains_through_the_front_door(fleet: RunningFleet) -> None:
    long_stream = {
        "model": LLAMA,
        "stream": True,
        "max_tokens": 1000,
        "messages": [{"role": "user", "content": "drain me"}],
        "response_format": {"type": "regex", "regex": "([a-z]{6} ){320}"},
    }

    def stream(i: int) -> list[str]:
        body = {**long_stream, "messages": [{"role": "user", "content": f"drain me {i}"}]}
        with httpx.stream(
            "POST",
            f"{fleet.url}/v1/openai/chat/completions",
            json=body,
            headers=AUTH,
            timeout=120,
        ) as r:
            assert r.status_code == 200
            return [line for line in sse_lines(r) if line.startswith("data: ")]

    def in_flight(name: str) -> float:
        return fleet.metric(name, "deepinfra_requests_in_flight")

    pids = {n: fleet.pid(n) for n in (LLAMA_0, LLAMA_1)}
    assert all(pids.values())  # 0 would signal the test's own process group
    with ThreadPoolExecutor(6) as pool:
        streams = [pool.submit(stream, i) for i in range(6)]
        deadline = time.monotonic() + 60
        while True:
            loads = {n: in_flight(n) for n in (LLAMA_0, LLAMA_1)}
            if any(loads.values()):
                break
            for s in streams:
                if s.done():
                    s.result()  # a stream that failed says why
            assert time.monotonic() < deadline, "no stream started"
            time.sleep(0.05)
        victim = max(loads, key=loads.__getitem__)
        pid = pids[victim]
        os.kill(pid, signal.SIGTERM)
        # New requests meanwhile go to the other replica.
        during = [chat(fleet, 2000 + i).status_code for i in range(6)]
        results = [s.result() for s in streams]
    log = (fleet.run_dir / "logs" / f"{victim}.log").read_text()
    drained = [line for line in log.splitlines() if "SIGTERM: draining" in line]
    assert drained and '"SIGTERM: draining 0 ' not in drained[-1], drained
    assert during == [200] * 6
    for events in results:
        assert events[-1] == "data: [DONE]"
        assert '"finish_reason":"length"' in events[-2] or '"finish_reason":"stop"' in events[-2]
        assert not any('"error"' in e for e in events)
    # The drained replica exited and supervisord started it again.
    new_process(fleet, victim, pid)
    fleet.wait_ready(victim)
