"""Development PKI: a CA, one certificate per service (+ gateway), an operator client
certificate, and the Ed25519 key that signs JWTs with its JWKS.

    .venv/bin/python -m deploy.pki.make_pki [--out DIR] [--force]

Idempotent: files that exist and still fit (signed by the current CA, not about to
expire) are kept byte for byte; anything missing is made; --force remakes everything.
Only for development and tests: keys are unencrypted (mode 0600) on local disk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.common.tokens import public_jwk

logger = logging.getLogger(__name__)

DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "out"
SERVICE_NAMES: tuple[str, ...] = ("detector", "predictor", "planner", "tenancy", "audit", "coordinator")
SERVER_IDENTITIES: tuple[str, ...] = (*SERVICE_NAMES, "gateway")
CLIENT_IDENTITIES: tuple[str, ...] = ("operator",)
SERVICE_SUFFIX = "healing-guard.local"
CA_COMMON_NAME = "Healing Guard Dev CA"
ORGANIZATION = "Healing Guard (development)"

CA_LIFETIME = dt.timedelta(days=3650)
LEAF_LIFETIME = dt.timedelta(days=825)
# Certificates closer than this to expiry are remade on the next run.
RENEW_BEFORE = dt.timedelta(days=7)
# Backdate so a peer whose clock is a little behind still accepts a fresh certificate.
CLOCK_SKEW = dt.timedelta(minutes=5)


def identity(name: str, suffix: str = SERVICE_SUFFIX) -> str:
    """The DNS name peers check for `name`, e.g. planner.healing-guard.local."""
    return f"{name}.{suffix}"


@dataclass(frozen=True)
class PkiPaths:
    """Where the files of one PKI directory are."""

    out_dir: Path

    @property
    def ca(self) -> Path:
        return self.out_dir / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.out_dir / "ca-key.pem"

    @property
    def signing_key(self) -> Path:
        return self.out_dir / "signing-key.pem"

    @property
    def jwks(self) -> Path:
        return self.out_dir / "jwks.json"

    def cert(self, name: str) -> Path:
        self._check_name(name)
        return self.out_dir / f"{name}.pem"

    def key(self, name: str) -> Path:
        self._check_name(name)
        return self.out_dir / f"{name}-key.pem"

    @staticmethod
    def _check_name(name: str) -> None:
        if name not in SERVER_IDENTITIES and name not in CLIENT_IDENTITIES:
            known = ", ".join((*SERVER_IDENTITIES, *CLIENT_IDENTITIES))
            raise ValueError(f"no certificate named {name!r}; known: {known}")

    def all_files(self) -> list[Path]:
        names = (*SERVER_IDENTITIES, *CLIENT_IDENTITIES)
        return [self.ca, self.ca_key, *(p for n in names for p in (self.cert(n), self.key(n))),
                self.signing_key, self.jwks]


@dataclass(frozen=True)
class ForeignCredentials:
    """A CA unrelated to the dev CA and a certificate it signed (for negative tests)."""

    ca: Path
    cert: Path
    key: Path


# --- file writing ---------------------------------------------------------------------


def _write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write via a temp file + rename, so a crash never leaves half a key behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    _write_atomically(path, pem, 0o600)


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    _write_atomically(path, cert.public_bytes(serialization.Encoding.PEM), 0o644)


# --- certificates ---------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _new_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _new_leaf(ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, common_name: str,
              dns_names: Iterable[str], ip_addresses: Iterable[str], server: bool,
              ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server \
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name)).issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + LEAF_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _leaf_fits(cert_path: Path, key_path: Path, ca_cert: x509.Certificate) -> bool:
    """True if the existing pair was signed by this CA, matches, and is not near expiry."""
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return False
    if cert.not_valid_after_utc - RENEW_BEFORE < dt.datetime.now(dt.UTC):
        return False
    return cert.public_key() == key.public_key()


def _load_or_make_ca(paths: PkiPaths, force: bool,
                     ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, bool]:
    """The CA, and whether it is new (then every leaf must be remade)."""
    if not force and paths.ca.exists() and paths.ca_key.exists():
        try:
            cert = x509.load_pem_x509_certificate(paths.ca.read_bytes())
            key = serialization.load_pem_private_key(paths.ca_key.read_bytes(), password=None)
            fresh = cert.not_valid_after_utc - RENEW_BEFORE > dt.datetime.now(dt.UTC)
            if fresh and isinstance(key, ec.EllipticCurvePrivateKey) \
                    and cert.public_key() == key.public_key():
                return cert, key, False
        except ValueError:
            pass
        logger.warning("existing CA in %s is unusable; making a new one", paths.out_dir)
    cert, key = _new_ca(CA_COMMON_NAME)
    _write_key(paths.ca_key, key)
    _write_cert(paths.ca, cert)
    return cert, key, True


def _ensure_signing_key(paths: PkiPaths, force: bool) -> None:
    key: ed25519.Ed25519PrivateKey | None = None
    if not force and paths.signing_key.exists():
        try:
            loaded = serialization.load_pem_private_key(paths.signing_key.read_bytes(), password=None)
            key = loaded if isinstance(loaded, ed25519.Ed25519PrivateKey) else None
        except ValueError:
            key = None
    if key is None:
        key = ed25519.Ed25519PrivateKey.generate()
        _write_key(paths.signing_key, key)
    jwks = json.dumps({"keys": [public_jwk(key)]}, indent=2).encode("utf-8") + b"\n"
    if not paths.jwks.exists() or paths.jwks.read_bytes() != jwks:
        _write_atomically(paths.jwks, jwks, 0o644)


def make_pki(out_dir: Path, force: bool = False) -> PkiPaths:
    """Make whatever is missing (or everything, with force) in `out_dir`."""
    paths = PkiPaths(Path(out_dir))
    paths.out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(paths.out_dir, 0o700)
    ca_cert, ca_key, ca_is_new = _load_or_make_ca(paths, force)
    for name in (*SERVER_IDENTITIES, *CLIENT_IDENTITIES):
        if not ca_is_new and _leaf_fits(paths.cert(name), paths.key(name), ca_cert):
            continue
        server = name in SERVER_IDENTITIES
        cert, key = _new_leaf(
            ca_cert, ca_key, identity(name),
            dns_names=["localhost", identity(name)] if server else [identity(name)],
            ip_addresses=["127.0.0.1"] if server else [], server=server)
        _write_key(paths.key(name), key)
        _write_cert(paths.cert(name), cert)
        logger.info("made certificate for %s", identity(name))
    _ensure_signing_key(paths, force)
    return paths


def load_pki(out_dir: Path) -> PkiPaths:
    """The paths of an existing PKI; fails, naming the first missing file, if incomplete."""
    paths = PkiPaths(Path(out_dir))
    missing = [path for path in paths.all_files() if not path.exists()]
    if missing:
        raise FileNotFoundError(
            f"PKI in {paths.out_dir} is incomplete: {missing[0].name} is missing; "
            "run `python -m deploy.pki.make_pki`")
    return paths


def make_foreign_client(out_dir: Path, client_name: str = "operator",
                        ca_common_name: str = "Untrusted Test CA") -> ForeignCredentials:
    """A fresh CA unrelated to the dev CA, and a client+server certificate it signed.

    The certificate claims the same identity as the genuine one (`<client_name>.
    healing-guard.local`, localhost, 127.0.0.1), so a peer accepting it would prove that
    only the name, not the chain, was checked.
    """
    out = Path(out_dir)
    ca_cert, ca_key = _new_ca(ca_common_name)
    cert, key = _new_leaf(ca_cert, ca_key, identity(client_name),
                          dns_names=["localhost", identity(client_name)], ip_addresses=["127.0.0.1"],
                          server=True)
    creds = ForeignCredentials(out / "foreign-ca.pem", out / f"foreign-{client_name}.pem",
                               out / f"foreign-{client_name}-key.pem")
    _write_cert(creds.ca, ca_cert)
    _write_cert(creds.cert, cert)
    _write_key(creds.key, key)
    return creds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.pki.make_pki", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR,
                        help=f"output folder (default {DEFAULT_OUT_DIR})")
    parser.add_argument("--force", action="store_true", help="remake every key and certificate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        paths = make_pki(args.out, force=args.force)
    except (OSError, ValueError) as error:
        print(f"make_pki: {error}", file=sys.stderr)
        return 1
    print(f"PKI ready in {paths.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
