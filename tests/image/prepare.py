"""Set-up for the image test, run by `make image-test` before pytest (like an install: it
fetches from the package registries, which the test itself never contacts):

- a wheelhouse of every wheel the CPU build installs, fetched by this machine's pip (which
  knows where torch's CPU wheel is), once per pyproject.toml;
- a Debian bookworm base with python3 and its venv module, made with mmdebstrap from the
  Debian mirror (no image registry is reachable from these machines), once.

    python -m tests.image.prepare
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(
    os.environ.get("DEEPINFRA_SERVE_TEST_CACHE", Path.home() / ".cache" / "deepinfra-serve")
)
DEBIAN_MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
BASE_TARBALL = CACHE / "image-base" / "bookworm-python3.tar"


def wheelhouse() -> Path:
    """Where this pyproject.toml's wheels are (complete once `complete` exists)."""
    pyproject = (ROOT / "pyproject.toml").read_bytes()
    return CACHE / "wheelhouse" / hashlib.sha256(pyproject).hexdigest()[:16]


def fetch_wheels() -> Path:
    folder = wheelhouse()
    if not (folder / "complete").exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--dest", str(folder),
             f"{ROOT}[cpu]", "setuptools>=68"],
            check=True,
        )  # fmt: skip
        (folder / "complete").touch()
    return folder


def make_base() -> Path | None:
    if BASE_TARBALL.exists():
        return BASE_TARBALL
    if shutil.which("mmdebstrap") is None:
        print("mmdebstrap is not installed: no base image made")
        return None
    BASE_TARBALL.parent.mkdir(parents=True, exist_ok=True)
    partial = BASE_TARBALL.with_suffix(".partial.tar")
    subprocess.run(
        ["mmdebstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm",
         str(partial), DEBIAN_MIRROR],
        check=True,
        capture_output=True,
    )  # fmt: skip
    partial.rename(BASE_TARBALL)
    return BASE_TARBALL


if __name__ == "__main__":
    print(f"wheelhouse: {fetch_wheels()}")
    print(f"base: {make_base()}")
