"""A fleet's HAProxy and supervisord configuration, written into its run folder."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from jinja2 import Environment, PackageLoader, StrictUndefined

from ..config.settings import ServerSettings
from ..http.auth import KeyEntry, key_digest, read_entries
from .spec import Fleet

# What the proxy allows beyond the replicas' own bounds, so that they end long requests.
PROXY_MARGIN_S = 30

_ERRORS = {
    502: ("Bad Gateway", "The replica failed to answer; retry", "bad_gateway"),
    503: ("Service Unavailable", "No replica can take the request now; retry later", "no_replica"),
    504: ("Gateway Timeout", "The replica did not answer in time", "gateway_timeout"),
}


def key_limits_map(entries: list[KeyEntry]) -> str:
    """The front door's map of the keys' own limits, by sha256 digest: it never holds a key.
    Keys without one get the default limit."""
    return "".join(f"{key_digest(e.key)} {e.rate_limit}\n" for e in entries if e.rate_limit)


def proxy_timeout_s(settings: ServerSettings) -> int:
    """The proxy's client and server timeouts: a flex request may wait for room, then run for
    the request timeout, before its first byte."""
    return int(settings.flex_max_wait_s + settings.request_timeout_s + PROXY_MARGIN_S)


def _templates() -> Environment:
    return Environment(
        loader=PackageLoader("deepinfra_serve", "fleet"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # configuration files, not HTML
    )


def write_config(
    fleet: Fleet,
    run_dir: Path,
    *,
    spec_path: Path,
    host: str,
    port: int,
    haproxy: str,
    max_body_bytes: int,
    stop_wait_s: float,
    settings: ServerSettings,
) -> Path:
    """Write haproxy.cfg, models.map, key_limits.map, the error pages and supervisord.conf;
    returns the last."""
    (run_dir / "logs").mkdir(parents=True, exist_ok=True)
    (run_dir / "errors").mkdir(exist_ok=True)
    backends = [(fleet.backend(card), card.name) for card, _ in fleet.cards]
    replicas_of = {
        fleet.backend(card): [r for r in fleet.replicas if r.card.name == card.name]
        for card, _ in fleet.cards
    }
    # Each card's model and its LoRA adapters, to the card's replicas.
    (run_dir / "models.map").write_text(
        "".join(
            f"{name} {fleet.backend(card)}\n"
            for card, _ in fleet.cards
            for name in (card.name, *card.adapter_names)
        )
    )
    entries = read_entries(settings.api_keys, settings.api_keys_file)
    (run_dir / "key_limits.map").write_text(key_limits_map(entries))
    # What a replica admits of default and priority: past it, HAProxy queues.
    maxconn_of = {}
    for card, _ in fleet.cards:
        policy = card.tier_policy(settings.max_concurrent_requests)
        maxconn_of[fleet.backend(card)] = policy.limit + policy.reserve
    for status, (reason, message, code) in _ERRORS.items():
        body = json.dumps(
            {"error": {"message": message, "type": "server_error", "param": None, "code": code}}
        )
        (run_dir / "errors" / f"{status}.http").write_text(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Cache-Control: no-cache\r\nRetry-After: 1\r\nConnection: close\r\n\r\n{body}\n"
        )
    env = _templates()
    common = {"spec_path": spec_path, "run_dir": run_dir}
    (run_dir / "haproxy.cfg").write_text(
        env.get_template("haproxy.cfg.j2").render(
            **common,
            host=host,
            port=port,
            max_body_bytes=max_body_bytes,
            timeout_s=proxy_timeout_s(settings),
            key_rate_limit=settings.key_rate_limit,
            maxconn_of=maxconn_of,
            policy=fleet.spec.policy,
            backends=backends,
            replicas_of=replicas_of,
            all_replicas=fleet.replicas,
        )
    )
    conf = run_dir / "supervisord.conf"
    conf.write_text(
        env.get_template("supervisord.conf.j2").render(
            **common,
            haproxy=haproxy,
            python=sys.executable,
            device=fleet.device,
            replicas=fleet.replicas,
            fleet_cards=",".join(str(path) for _, path in fleet.cards),
            stop_wait_s=int(stop_wait_s),
        )
    )
    return conf
