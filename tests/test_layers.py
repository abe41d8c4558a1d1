"""The package's layers, as its folders show them: nothing imports from a layer above its own,
the APIs do not import each other, below the HTTP layer no module imports a web framework,
vLLM is reached through its documented API or the seam, and the types are checked."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from .helpers import ROOT

PACKAGE = ROOT / "src" / "deepinfra_serve"

# Lowest first. A module may import from its own layer and the ones before it.
LAYERS = [
    {"config"},
    {"observability"},
    {"store"},
    {"engine"},
    {"openai", "native", "anthropic", "batch", "lora", "usage"},
    {"http"},
    {"fleet", "cli"},
]
WEB_FRAMEWORKS = {"fastapi", "starlette", "uvicorn"}
APIS = {
    "openai",
    "native",
    "anthropic",
    "batch",
    "lora",
    "usage",
}  # side by side: none imports another
BELOW_HTTP = {"config", "observability", "store", "engine"}


def _part(module: str) -> str:
    """The first folder (or top module) under the package: its layer's name."""
    return module.split(".")[1] if module.count(".") else ""


def _layer(part: str) -> int:
    for i, names in enumerate(LAYERS):
        if part in names:
            return i
    raise AssertionError(f"{part!r} is in no layer")


def _modules() -> list[tuple[str, Path]]:
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        name = ".".join(rel.parts).removesuffix(".__init__")
        if name.count("."):  # the package's own __init__ is in no layer
            out.append((name, path))
    return out


def _imports(module: str, path: Path) -> set[str]:
    """Absolute names of everything `path` imports, type-checking imports included."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module or ""
            found.add(name)
            if not node.module:  # from . import x: x is a module
                found |= {f"{name}.{alias.name}" for alias in node.names}
    return found


def _is_module(part: str) -> bool:
    """A folder or module of the package (not a name such as `__version__`)."""
    return (PACKAGE / part).is_dir() or (PACKAGE / f"{part}.py").is_file()


MODULES = _modules()


def test_every_module_is_in_a_layer() -> None:
    assert {_part(m) for m, _ in MODULES} - {"__main__"} <= set().union(*LAYERS)


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_no_module_imports_from_above_its_layer(module: str, path: Path) -> None:
    own = _part(module)
    for name in _imports(module, path):
        other = _part(name) if name.startswith("deepinfra_serve.") else ""
        if other and _is_module(other):
            assert _layer(other) <= _layer(own), f"{module} imports {name}"
            if own != other and {own, other} <= APIS:
                raise AssertionError(f"{module} imports {name}: the APIs stand side by side")


@pytest.mark.parametrize(
    ("module", "path"),
    [(m, p) for m, p in MODULES if _part(m) in BELOW_HTTP],
    ids=[m for m, _ in MODULES if _part(m) in BELOW_HTTP],
)
def test_the_core_imports_no_web_framework(module: str, path: Path) -> None:
    frameworks = {name.split(".")[0] for name in _imports(module, path)} & WEB_FRAMEWORKS
    assert not frameworks, f"{module} imports {frameworks}"


# What vLLM documents as its API; everything else of vLLM's goes through the seam.
VLLM_DOCUMENTED = {
    "vllm.sampling_params",
    "vllm.exceptions",
    "vllm.engine.arg_utils",
    "vllm.config",
    "vllm.v1.engine.async_llm",
    "vllm.lora.request",  # `LoRARequest`, as vLLM's LoRA guide imports it
}
SEAM = "deepinfra_serve.engine.vllm_seam"


@pytest.mark.parametrize(("module", "path"), MODULES, ids=[m for m, _ in MODULES])
def test_vllm_is_reached_through_its_documented_api_or_the_seam(module: str, path: Path) -> None:
    if module == SEAM:
        return
    undocumented = {
        name
        for name in _imports(module, path)
        if name.split(".")[0] == "vllm" and name not in VLLM_DOCUMENTED
    }
    assert not undocumented, f"{module} imports {undocumented}: go through {SEAM}"


def test_the_type_checker_runs_with_the_linter() -> None:
    makefile = (ROOT / "Makefile").read_text()
    lint = makefile.split("\nlint:", 1)[1].split("\n\n", 1)[0]
    assert "$(BIN)/mypy" in lint
    assert "test: lint " in makefile  # CI's `make test` lints first
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"mypy==' in pyproject and 'files = ["src"]' in pyproject
