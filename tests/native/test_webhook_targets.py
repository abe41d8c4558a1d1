"""Which webhook targets are refused, checked without a single connection: literal addresses
are classified as they are, names resolve from /etc/hosts (localhost) or through the C
library's numeric forms, and the connector is a recording test double."""

from __future__ import annotations

from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

import httpcore
import pytest

from deepinfra_serve.config.settings import parse_networks
from deepinfra_serve.native.webhook_targets import PinnedBackend, TargetRefused, WebhookTargets

REFUSED = [
    "http://127.0.0.1:8000/hook",  # loopback
    "http://127.9.9.9/",
    "http://2130706433/",  # 127.0.0.1, decimal
    "http://0x7f.1/",  # hex and short form
    "http://0x7f000001/",
    "http://0177.0.0.1/",  # octal
    "http://localhost:8000/",  # a name that resolves to loopback
    "http://[::1]:8000/",
    "http://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
    "http://[::ffff:7f00:1]/",
    "http://0.0.0.0/",  # unspecified
    "http://[::]/",
    "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 form of the metadata address
    "http://[2002:a9fe:a9fe::1]/",  # 6to4 form of it
    "http://[fd00:ec2::254]/",  # the metadata address over IPv6 (unique local)
    "http://10.0.0.5:10250/pods",  # a kubelet, RFC 1918
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",  # carrier-grade NAT
    "http://224.0.0.1/",  # multicast
    "http://[ff02::1]/",
    "http://240.0.0.1/",  # reserved
    "http://255.255.255.255/",
    "http://[fe80::1]/",  # link-local IPv6
    "https://192.168.0.10/secure",
]


class RecordingConnector(httpcore.AsyncNetworkBackend):
    """Test double for the real network: records what would have been dialled."""

    def __init__(self) -> None:
        self.dialled: list[str] = []

    async def connect_tcp(self, host: str, port: int, **kwargs: Any) -> Any:
        self.dialled.append(host)
        raise httpcore.ConnectError("the test double does not connect")

    async def sleep(self, seconds: float) -> None:
        pass


@pytest.mark.parametrize("url", REFUSED)
async def test_forbidden_targets_are_refused(url: str) -> None:
    with pytest.raises(TargetRefused):
        await WebhookTargets().check(url)


@pytest.mark.parametrize("url", REFUSED)
async def test_the_connector_is_never_called_for_a_forbidden_target(url: str) -> None:
    connector = RecordingConnector()
    backend = PinnedBackend(WebhookTargets(), connector)
    host = urlsplit(url).hostname or ""
    with pytest.raises(httpcore.ConnectError, match="refused"):
        await backend.connect_tcp(host, 80)
    assert connector.dialled == []


async def test_public_addresses_pass_and_the_connection_is_pinned() -> None:
    await WebhookTargets().check("https://93.184.216.34/hook")
    await WebhookTargets().check("http://[2606:2800:220:1::]/hook")

    async def resolver(host: str, port: int) -> list[Any]:
        return [ip_address("93.184.216.34")]

    connector = RecordingConnector()
    backend = PinnedBackend(WebhookTargets(resolver=resolver), connector)
    with pytest.raises(httpcore.ConnectError, match="test double"):
        await backend.connect_tcp("hooks.example.com", 443)
    assert connector.dialled == ["93.184.216.34"]


async def test_a_name_that_rebinds_to_a_private_address_is_caught_at_connect_time() -> None:
    answers = iter([["93.184.216.34"], ["10.0.0.7"]])

    async def rebinding(host: str, port: int) -> list[Any]:
        return [ip_address(a) for a in next(answers)]

    targets = WebhookTargets(resolver=rebinding)
    await targets.check("http://rebind.example.com/")  # first answer: public
    connector = RecordingConnector()
    with pytest.raises(httpcore.ConnectError, match=r"10\.0\.0\.7 is a private address"):
        await PinnedBackend(targets, connector).connect_tcp("rebind.example.com", 80)
    assert connector.dialled == []


async def test_a_name_with_any_forbidden_address_is_refused() -> None:
    async def mixed(host: str, port: int) -> list[Any]:
        return [ip_address("93.184.216.34"), ip_address("127.0.0.1")]

    with pytest.raises(TargetRefused, match="loopback"):
        await WebhookTargets(resolver=mixed).check("http://mixed.example.com/")


async def test_allowed_networks_open_exactly_what_they_name() -> None:
    targets = WebhookTargets(parse_networks("127.0.0.2/32, 10.1.0.0/16"))
    await targets.check("http://127.0.0.2:9000/hook")
    await targets.check("http://10.1.200.3/hook")
    for url in ("http://127.0.0.1:9000/", "http://10.2.0.1/", "http://169.254.169.254/"):
        with pytest.raises(TargetRefused):
            await targets.check(url)


def test_a_bad_network_names_the_entry() -> None:
    with pytest.raises(ValueError, match=r"'10\.0\.0\.300/8'"):
        parse_networks("10.0.0.0/8, 10.0.0.300/8")
