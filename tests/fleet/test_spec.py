"""Fleet files: GPUs, ports and the configuration written for HAProxy and supervisord."""

from __future__ import annotations

import configparser
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deepinfra_serve.cli import main
from deepinfra_serve.fleet.spec import FleetError, load_fleet

from ..helpers import ROOT

H100X8 = ROOT / "fleets" / "h100x8.yaml"


def test_each_replica_owns_its_cards_gpus() -> None:
    fleet = load_fleet(H100X8, device="cuda", first_port=9001)
    assert [(r.card.name, r.gpus, r.port) for r in fleet.replicas] == [
        ("Gryphe/MythoMax-L2-13b-turbo", (0, 1), 9001),
        ("codellama/CodeLlama-70b-Instruct-hf", (2, 3, 4, 5), 9002),
        ("mistralai/Mistral-Nemo-Instruct-2407", (6,), 9003),
        ("DeepInfra/pygmalion-13b-4bit-128g", (7,), 9004),
    ]


def test_on_the_cpu_replicas_take_the_cores_in_turn(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Each engine computes on a core of its own where there are enough; left to vLLM, all of
    # them would bind to the first core.
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    fleet = load_fleet(ROOT / "fleets" / "cpu-demo.yaml", device="cpu", first_port=8001)
    assert [(r.name, r.gpus, r.cpus, r.port) for r in fleet.replicas] == [
        ("huggingfacetb-smollm2-135m-instruct-0", (), (0,), 8001),
        ("deepinfra-serve-tiny-random-llama-0", (), (1,), 8002),
        ("deepinfra-serve-tiny-random-llama-1", (), (0,), 8003),
    ]
    code = main(
        ["fleet", "--spec", str(ROOT / "fleets" / "cpu-demo.yaml"), "--device", "cpu",
         "--run-dir", str(tmp_path), "--config-only"]
    )  # fmt: skip
    assert code == 0
    conf = configparser.ConfigParser(interpolation=None)
    conf.read(tmp_path / "supervisord.conf")
    env = conf["program:deepinfra-serve-tiny-random-llama-0"]["environment"]
    assert 'VLLM_CPU_OMP_THREADS_BIND="1"' in env and "CUDA_VISIBLE_DEVICES" not in env


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "gpus: 4\nmodels: [{card: ../model_cards/codellama-70b-instruct.yaml, replicas: 2}]",
            "the replicas need 8 GPUs (tensor_parallel_size each), the node has 4",
        ),
        (
            "models: [{card: ../model_cards/mythomax-l2-13b-turbo.yaml},"
            " {card: ../model_cards/mythomax-l2-13b-turbo.yaml}]",
            "is listed twice",
        ),
        ("models: [{card: ../model_cards/nothing.yaml}]", "cannot read model card"),
        ("models: []", "models: List should have at least 1 item"),
        ("policy: random\nmodels: [{card: ../model_cards/mythomax-l2-13b-turbo.yaml}]", "policy"),
        ("models: [{card: ../model_cards/mythomax-l2-13b-turbo.yaml, replica: 2}]", "replica"),
        ("gpus: 4\ngpus: 8\nmodels: []", "found the key 'gpus' twice"),
    ],
)
def test_a_broken_fleet_file_names_the_problem(text: str, message: str, tmp_path: Path) -> None:
    # Card paths are relative to the fleet file.
    (tmp_path / "fleets").mkdir()
    (tmp_path / "model_cards").symlink_to(ROOT / "model_cards")
    path = tmp_path / "fleets" / "broken.yaml"
    path.write_text(text)
    with pytest.raises(FleetError) as err:
        load_fleet(path, device="cuda", first_port=9001)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_the_written_configuration(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["fleet", "--spec", str(H100X8), "--device", "cuda", "--port", "9000",
         "--run-dir", str(tmp_path), "--config-only"]
    )  # fmt: skip
    assert code == 0
    assert capsys.readouterr().out.splitlines()[-1] == str(tmp_path / "supervisord.conf")
    conf = configparser.ConfigParser(interpolation=None)
    conf.read(tmp_path / "supervisord.conf")
    programs = [s for s in conf.sections() if s.startswith("program:")]
    assert len(programs) == 5  # the front door and four replicas
    nemo = conf["program:mistralai-mistral-nemo-instruct-2407-0"]
    assert "--port 9003 --device cuda" in nemo["command"]
    assert 'CUDA_VISIBLE_DEVICES="6"' in nemo["environment"]
    assert "mythomax-l2-13b-turbo.yaml," in nemo["environment"]  # the fleet's cards
    assert nemo["stopsignal"] == "TERM" and nemo["stopasgroup"] == "false"
    front = conf["program:front-door"]
    assert front["stopsignal"] == "USR1"  # HAProxy's soft stop
    assert int(front["priority"]) < int(nemo["priority"])  # started first, stopped last
    routes = (tmp_path / "models.map").read_text().splitlines()
    assert "DeepInfra/pygmalion-13b-4bit-128g model_deepinfra-pygmalion-13b-4bit-128g" in routes
    config = (tmp_path / "haproxy.cfg").read_text()
    assert "server codellama-codellama-70b-instruct-hf-0 127.0.0.1:9002" in config
    assert "bind 127.0.0.1:9000" in config
    if shutil.which("haproxy") is None:
        pytest.skip("Debian's haproxy is not installed here (`make test` installs it as root)")
    check = subprocess.run(
        ["haproxy", "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_supervisord_reads_the_written_configuration(tmp_path: Path) -> None:
    assert main(["fleet", "--spec", str(H100X8), "--device", "cuda", "--run-dir",
                 str(tmp_path), "--config-only"]) == 0  # fmt: skip
    from supervisor.options import ServerOptions

    options = ServerOptions()
    options.realize(["-c", str(tmp_path / "supervisord.conf")])
    names = [group.name for group in options.process_group_configs]
    assert names[0] == "front-door" and len(names) == 5
    assert sys.executable in options.process_group_configs[1].process_configs[0].command


def test_the_files_device_applies_unless_the_command_line_names_one() -> None:
    assert load_fleet(H100X8, device="auto", first_port=9001).device == "cuda"
    cpu = load_fleet(H100X8, device="cpu", first_port=9001)
    assert cpu.device == "cpu"
    assert all(r.gpus == () for r in cpu.replicas)


def test_every_replica_lists_the_fleet_in_one_order() -> None:
    from deepinfra_serve.config.cards import load_card
    from deepinfra_serve.http.app import fleet_cards

    cards = ROOT / "model_cards"
    fleet = f"{cards / 'mythomax-l2-13b-turbo.yaml'},{cards / 'pygmalion-13b-4bit-128g.yaml'},"
    fleet += str(cards / "mistral-nemo-instruct-2407.yaml")
    names = [
        [c.name for c in fleet_cards(load_card(cards / f), fleet)]
        for f in ("mistral-nemo-instruct-2407.yaml", "mythomax-l2-13b-turbo.yaml")
    ]
    expected = [
        "Gryphe/MythoMax-L2-13b-turbo",
        "DeepInfra/pygmalion-13b-4bit-128g",
        "mistralai/Mistral-Nemo-Instruct-2407",
    ]
    assert names == [expected, expected]
    alone = fleet_cards(load_card(cards / "codellama-70b-instruct.yaml"), "")
    assert [c.name for c in alone] == ["codellama/CodeLlama-70b-Instruct-hf"]


def test_key_limits_print_digests_and_a_typo_fails_naming_the_option(tmp_path: Path) -> None:
    keys = tmp_path / "api-keys"
    keys.write_text("sk-open\nsk-small rate_limit=3\n")
    env = {**os.environ, "DEEPINFRA_SERVE_API_KEYS": "sk-inline rate_limit=7"}
    cmd = [sys.executable, "-m", "deepinfra_serve.cli", "key-limits", "--api-keys-file", str(keys)]
    printed = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    digest = hashlib.sha256
    assert printed == (
        f"{digest(b'sk-inline').hexdigest()} 7\n{digest(b'sk-small').hexdigest()} 3\n"
    )
    keys.write_text("sk-small rate=3\n")
    bad = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert bad.returncode == 2
    assert "unknown API key option 'rate'" in bad.stderr and "sk-small" not in bad.stderr
