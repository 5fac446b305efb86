"""The README's grpcurl lines and `make up`'s banner, run as written against a real mesh.

Each command runs in a fresh bash that sourced the mesh's `mesh.env` and whose PATH does
not hold `.venv/bin`: grpcurl must come from what `mesh.env` puts on PATH."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from deploy.mesh import ROOT, Mesh, banner_commands

pytestmark = pytest.mark.integration

BARE_PATH = "/usr/local/bin:/usr/bin:/bin"


def readme_block() -> tuple[list[str], list[str]]:
    """The README's shell block that sources mesh.env: its setup lines and its grpcurl lines."""
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    block = next(b for b in blocks if "source .run/mesh.env" in b and "\ngrpcurl " in b)
    lines = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    setup = [line for line in lines if not line.startswith("grpcurl ")]
    return setup, [line for line in lines if line.startswith("grpcurl ")]


SETUP, README_COMMANDS = readme_block()


def run_pasted(mesh: Mesh, setup: list[str], command: str) -> subprocess.CompletedProcess[str]:
    env_file = mesh.run_dir / "mesh.env"
    script = "\n".join([*(line.replace(".run/mesh.env", str(env_file)) for line in setup), command])
    return subprocess.run(["bash", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": BARE_PATH, "HOME": str(Path.home())})


def test_the_readme_has_grpcurl_lines_to_test() -> None:
    assert any(line.startswith("source .run/mesh.env") for line in SETUP)
    assert len(README_COMMANDS) >= 6


@pytest.mark.parametrize("command", README_COMMANDS, ids=lambda c: c.split()[-1].rsplit(".", 1)[-1])
def test_each_readme_grpcurl_line_works_as_pasted(mesh: Mesh, command: str) -> None:
    result = run_pasted(mesh, SETUP, command)
    assert result.returncode == 0, f"{command}\n--- stderr:\n{result.stderr}"


@pytest.mark.parametrize("command", banner_commands(), ids=lambda c: c.split()[-1].rsplit(".", 1)[-1])
def test_each_banner_line_works_as_pasted(mesh: Mesh, command: str) -> None:
    result = run_pasted(mesh, ["source .run/mesh.env"], command)
    assert result.returncode == 0, f"{command}\n--- stderr:\n{result.stderr}"
