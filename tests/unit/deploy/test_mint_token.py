from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from deploy.pki.make_pki import PkiPaths
from services.common.tokens import TokenVerifier

REPO = Path(__file__).resolve().parents[3]


def _mint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploy.pki.mint_token", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=30)


def test_prints_a_token_the_services_accept(pki: PkiPaths) -> None:
    result = _mint("--tenant", "acme", "--role", "operator", "--role", "viewer", "--subject", "alice",
                   "--ttl", "120", "--pki", str(pki.out_dir))
    assert result.returncode == 0, result.stderr
    principal = TokenVerifier.from_jwks_file(pki.jwks).verify(result.stdout.strip())
    assert (principal.subject, principal.tenant, principal.roles) == ("alice", "acme", {"operator", "viewer"})


def test_json_output(pki: PkiPaths) -> None:
    result = _mint("--tenant", "acme", "--role", "admin", "--pki", str(pki.out_dir), "--json")
    assert result.returncode == 0, result.stderr
    issued = json.loads(result.stdout)
    assert TokenVerifier.from_jwks_file(pki.jwks).verify(issued["token"]).token_id == issued["token_id"]


def test_usage_errors_exit_2(pki: PkiPaths) -> None:
    assert _mint("--role", "operator", "--pki", str(pki.out_dir)).returncode == 2  # no tenant
    bad_role = _mint("--tenant", "acme", "--role", "root", "--pki", str(pki.out_dir))
    assert bad_role.returncode == 2 and "invalid choice: 'root'" in bad_role.stderr
    assert _mint("--tenant", "acme", "--role", "viewer", "--ttl", "0", "--pki", str(pki.out_dir)).returncode == 2


def test_missing_pki_exits_1_with_one_line(tmp_path: Path) -> None:
    result = _mint("--tenant", "acme", "--role", "viewer", "--pki", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "signing-key.pem not found" in result.stderr
