from __future__ import annotations

import base64
import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deploy.pki.make_pki import (
    CLIENT_IDENTITIES,
    SERVER_IDENTITIES,
    PkiPaths,
    load_pki,
    make_foreign_client,
    make_pki,
)
from services.common.tokens import jwk_thumbprint

REPO = Path(__file__).resolve().parents[3]


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(san.get_values_for_type(x509.DNSName)), {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}


def _snapshot(paths: PkiPaths) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in paths.all_files()}


def test_ca_is_a_ca_named_for_development(pki: PkiPaths) -> None:
    ca = _cert(pki.ca)
    [common_name] = ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    assert common_name.value == "Healing Guard Dev CA"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    ca.verify_directly_issued_by(ca)


@pytest.mark.parametrize("name", SERVER_IDENTITIES)
def test_server_certificates_chain_to_the_ca_with_identity_sans_and_both_ekus(pki: PkiPaths, name: str) -> None:
    cert = _cert(pki.cert(name))
    cert.verify_directly_issued_by(_cert(pki.ca))
    dns, ips = _sans(cert)
    assert dns == {"localhost", f"{name}.healing-guard.local"}
    assert ips == {"127.0.0.1"}
    ekus = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ekus == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    key = serialization.load_pem_private_key(pki.key(name).read_bytes(), password=None)
    assert key.public_key() == cert.public_key()


def test_operator_is_a_client_only_certificate(pki: PkiPaths) -> None:
    cert = _cert(pki.cert("operator"))
    cert.verify_directly_issued_by(_cert(pki.ca))
    dns, _ = _sans(cert)
    assert dns == {"operator.healing-guard.local"}
    ekus = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ekus == {ExtendedKeyUsageOID.CLIENT_AUTH}


def test_chain_verifies_with_openssl(pki: PkiPaths) -> None:
    # An independent verifier: purpose checks use the EKUs we wrote.
    for name, purpose in (("planner", "sslserver"), ("planner", "sslclient"), ("operator", "sslclient")):
        result = subprocess.run(["openssl", "verify", "-purpose", purpose, "-CAfile", str(pki.ca),
                                 str(pki.cert(name))], capture_output=True, text=True, timeout=10)
        assert result.returncode == 0, result.stderr
    result = subprocess.run(["openssl", "verify", "-purpose", "sslserver", "-CAfile", str(pki.ca),
                             str(pki.cert("operator"))], capture_output=True, text=True, timeout=10)
    assert result.returncode != 0


def test_private_keys_are_private(pki: PkiPaths) -> None:
    keys = [pki.ca_key, pki.signing_key, *(pki.key(n) for n in (*SERVER_IDENTITIES, *CLIENT_IDENTITIES))]
    for path in keys:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_jwks_publishes_the_signing_key_with_its_thumbprint(pki: PkiPaths) -> None:
    jwks = json.loads(pki.jwks.read_text())
    [jwk] = jwks["keys"]
    assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
    key = serialization.load_pem_private_key(pki.signing_key.read_bytes(), password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert base64.urlsafe_b64decode(jwk["x"] + "=") == raw
    assert jwk["kid"] == jwk_thumbprint(jwk)


def test_rfc7638_thumbprint_vector() -> None:
    # RFC 8037 appendix A.3: thumbprint of the Ed25519 example key.
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert jwk_thumbprint(jwk) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_second_run_changes_nothing(fresh_pki: PkiPaths) -> None:
    before = _snapshot(fresh_pki)
    make_pki(fresh_pki.out_dir)
    assert _snapshot(fresh_pki) == before


def test_force_remakes_everything(fresh_pki: PkiPaths) -> None:
    before = _snapshot(fresh_pki)
    make_pki(fresh_pki.out_dir, force=True)
    after = _snapshot(fresh_pki)
    assert all(after[name] != before[name] for name in before)
    _cert(fresh_pki.cert("audit")).verify_directly_issued_by(_cert(fresh_pki.ca))


def test_missing_leaf_is_made_and_others_kept(fresh_pki: PkiPaths) -> None:
    before = _snapshot(fresh_pki)
    fresh_pki.key("planner").unlink()
    make_pki(fresh_pki.out_dir)
    after = _snapshot(fresh_pki)
    assert after["planner-key.pem"] != before["planner-key.pem"]
    assert after["planner.pem"] != before["planner.pem"]
    assert after["ca.pem"] == before["ca.pem"] and after["audit.pem"] == before["audit.pem"]


def test_new_ca_reissues_every_leaf(fresh_pki: PkiPaths) -> None:
    fresh_pki.ca_key.unlink()
    make_pki(fresh_pki.out_dir)
    ca = _cert(fresh_pki.ca)
    for name in (*SERVER_IDENTITIES, *CLIENT_IDENTITIES):
        _cert(fresh_pki.cert(name)).verify_directly_issued_by(ca)


def test_load_pki_names_the_missing_file(fresh_pki: PkiPaths) -> None:
    assert load_pki(fresh_pki.out_dir) == fresh_pki
    fresh_pki.jwks.unlink()
    with pytest.raises(FileNotFoundError, match="jwks.json is missing"):
        load_pki(fresh_pki.out_dir)


def test_unknown_certificate_name_is_refused(pki: PkiPaths) -> None:
    with pytest.raises(ValueError, match="no certificate named 'billing'"):
        pki.cert("billing")


def test_foreign_client_does_not_chain_to_the_dev_ca(pki: PkiPaths, tmp_path: Path) -> None:
    foreign = make_foreign_client(tmp_path)
    cert = _cert(foreign.cert)
    cert.verify_directly_issued_by(_cert(foreign.ca))
    with pytest.raises((InvalidSignature, ValueError)):
        cert.verify_directly_issued_by(_cert(pki.ca))
    assert "operator.healing-guard.local" in _sans(cert)[0]
    assert stat.S_IMODE(foreign.key.stat().st_mode) == 0o600


def test_cli_makes_pki_and_is_idempotent(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    run = [sys.executable, "-m", "deploy.pki.make_pki", "--out", str(out)]
    first = subprocess.run(run, cwd=REPO, capture_output=True, text=True, timeout=30)
    assert first.returncode == 0, first.stderr
    snapshot = _snapshot(load_pki(out))
    assert subprocess.run(run, cwd=REPO, capture_output=True, timeout=30).returncode == 0
    assert _snapshot(load_pki(out)) == snapshot
    assert subprocess.run([*run, "--force"], cwd=REPO, capture_output=True, timeout=30).returncode == 0
    assert _snapshot(load_pki(out))["ca.pem"] != snapshot["ca.pem"]
