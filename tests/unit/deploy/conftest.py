from __future__ import annotations

from pathlib import Path

import pytest

from deploy.pki.make_pki import PkiPaths, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PkiPaths:
    """One PKI per test module: making it costs ~0.1 s, tests only read it."""
    return make_pki(tmp_path_factory.mktemp("pki") / "out")


@pytest.fixture()
def fresh_pki(tmp_path: Path) -> PkiPaths:
    return make_pki(tmp_path / "out")
