"""A real Prometheus server scrapes the service and answers a query about it.

Needs Debian's `prometheus` binary; `make test` installs it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from ..helpers import MODEL, free_port, unavailable

PROMETHEUS = shutil.which("prometheus")


@pytest.fixture(scope="module")
def prometheus(base_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if PROMETHEUS is None:
        unavailable("Debian's prometheus is not installed here (`make test` installs it)")
    work = tmp_path_factory.mktemp("prometheus")
    target = urlsplit(base_url).netloc
    config = work / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: deepinfra-serve\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = free_port()
    log = (work / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def query(prom: str, promql: str) -> list[dict]:
    try:
        r = httpx.get(f"{prom}/api/v1/query", params={"query": promql}, timeout=5)
    except httpx.HTTPError:
        return []
    if r.status_code != 200:
        return []
    return r.json()["data"]["result"]


def test_prometheus_reads_the_services_metrics(client: httpx.Client, prometheus: str) -> None:
    r = client.post(
        "/v1/openai/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3},
    )
    assert r.status_code == 200
    promql = f'sum(deepinfra_requests_total{{model="{MODEL}",api="chat",status="200"}})'
    deadline = time.monotonic() + 60
    result: list[dict] = []
    while not result and time.monotonic() < deadline:
        result = query(prometheus, promql)
        time.sleep(0.5)
    assert result, "Prometheus never returned the service's request counter"
    assert float(result[0]["value"][1]) >= 1
    up = query(prometheus, 'up{job="deepinfra-serve"}')
    assert up and up[0]["value"][1] == "1"
    ready = query(prometheus, f'deepinfra_engine_ready{{model="{MODEL}"}}')
    assert ready and ready[0]["value"][1] == "1"
    assert query(prometheus, "vllm:num_requests_running")
