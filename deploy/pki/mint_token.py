"""Mint a development JWT with the PKI's signing key and print it on stdout.

    .venv/bin/python -m deploy.pki.mint_token --tenant acme --role operator [--role viewer] \
        [--subject alice] [--ttl 3600] [--pki DIR] [--json]

Use it as `grpcurl -H "authorization: Bearer $(python -m deploy.pki.mint_token ...)" ...`.
In a deployment tokens come from tenancy's IssueToken (which records them for revocation).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from deploy.pki.make_pki import DEFAULT_OUT_DIR, PkiPaths
from services.common.errors import HealingGuardError
from services.common.tokens import DEFAULT_AUDIENCE, DEFAULT_ISSUER, ROLE_NAMES, load_signer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m deploy.pki.mint_token",
                                     description="Mint a development JWT for Healing Guard.")
    parser.add_argument("--tenant", required=True, help="tenant the token acts for")
    parser.add_argument("--role", dest="roles", action="append", required=True, choices=sorted(ROLE_NAMES),
                        help="a role to grant; repeat for several")
    parser.add_argument("--subject", default="operator", help="who the token is for (default: operator)")
    parser.add_argument("--ttl", type=int, default=3600, help="lifetime in seconds (default 3600)")
    parser.add_argument("--pki", type=Path, default=DEFAULT_OUT_DIR,
                        help=f"PKI folder (default {DEFAULT_OUT_DIR})")
    parser.add_argument("--issuer", default=DEFAULT_ISSUER, help=argparse.SUPPRESS)
    parser.add_argument("--audience", default=DEFAULT_AUDIENCE, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print token, token_id and expires_at as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.ttl <= 0:
        parser.error(f"--ttl must be > 0 seconds, got {args.ttl}")
    if not args.tenant.strip():
        parser.error("--tenant must not be empty")
    paths = PkiPaths(args.pki)
    try:
        signer = load_signer(paths.signing_key, paths.jwks, issuer=args.issuer, audience=args.audience)
        issued = signer.issue(args.subject, args.tenant, args.roles, ttl_seconds=args.ttl)
    except FileNotFoundError as error:
        print(f"mint_token: {error.filename} not found; run `python -m deploy.pki.make_pki --out {args.pki}`",
              file=sys.stderr)
        return 1
    except (OSError, ValueError, HealingGuardError) as error:
        print(f"mint_token: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps({"token": issued.token, "token_id": issued.token_id,
                          "expires_at": issued.expires_at}))
    else:
        print(issued.token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
