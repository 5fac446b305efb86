"""Offline verifier for audit exports — no server needed.

    python -m services.audit.verify EXPORT.json [--keys KEYS.json] [--monitor STATE.json] [--json]

Checks the export's signed tree head, every entry's leaf hash and inclusion proof
(see `services.audit.export` for the format). KEYS.json is a JSON list of verifier
keys ("<name>+<key id hex>+<base64 key>"), or an object with a "public_keys" list;
without it the keys inside the export are used, which proves self-consistency only.

With --monitor, STATE.json remembers the last tree head seen; the export's head must
be proved consistent with it (the export's "consistency" section), then it becomes the
new state. A missing STATE.json is created from the first head (trust on first use).

Exit status: 0 verified, 1 verification failed (one line says what), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from services.audit.checkpoint import VerificationError, VerifierKey
from services.audit.export import advance_monitor, parse_keys, verify_export


class UsageError(Exception):
    pass


def _load_json(path: str, what: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{what} {path} is not readable JSON: {err}") from None


def _load_keys(path: str) -> list[VerifierKey]:
    data = _load_json(path, "keys file")
    if isinstance(data, dict):
        data = data.get("public_keys")
    try:
        return parse_keys(data)
    except VerificationError as err:
        raise UsageError(f"keys file {path}: {err}") from None


def _write_state(path: str, state: dict[str, Any]) -> None:
    # Replace atomically, so a crash never leaves a monitor without its last head.
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=".monitor-")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(state, out, indent=1, sort_keys=True)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, target)


def run(argv: list[str]) -> tuple[int, dict[str, Any]]:
    parser = argparse.ArgumentParser(prog="python -m services.audit.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("export", help="export JSON file written by the audit service (ExportRange)")
    parser.add_argument("--keys", help="JSON file with the trusted verifier keys")
    parser.add_argument("--monitor", metavar="STATE", help="monitor state file: prove the new head consistent with it")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)
    doc = _load_json(args.export, "export")
    keys = _load_keys(args.keys) if args.keys else None
    result: dict[str, Any] = {"export": args.export, "trusted_keys": "--keys" if keys is not None else "embedded"}
    try:
        verified = verify_export(doc, keys)
        head = verified.head.checkpoint
        result.update(verified=True, tree_size=head.tree_size, root_hash=head.root_hash.hex(),
                      entries_verified=verified.entries_verified, key=verified.head.key_name)
        lines = [f"OK: {verified.entries_verified} entries included in tree size {head.tree_size} "
                 f"(root {head.root_hash.hex()[:16]}…), signed by {verified.head.key_name}"]
        if keys is None:
            lines.append("note: checked with the export's own keys; pass --keys for a trusted check")
        if args.monitor:
            state = _load_json(args.monitor, "monitor state") if Path(args.monitor).exists() else None
            trusted = keys if keys is not None else parse_keys(doc.get("public_keys"))
            new_state, what = advance_monitor(state, doc, trusted)
            _write_state(args.monitor, new_state)
            result["monitor"] = what
            lines.append(f"monitor: {what}")
    except VerificationError as err:
        result.update(verified=False, error=str(err))
        return 1, result
    result["message"] = "\n".join(lines)
    return 0, result


def main(argv: list[str] | None = None) -> int:
    try:
        code, result = run(sys.argv[1:] if argv is None else argv)
    except UsageError as err:
        print(f"usage error: {err}", file=sys.stderr)
        return 2
    except SystemExit as exit_:  # argparse: --help is 0, mistakes are 2
        return int(exit_.code or 0)
    as_json = "--json" in (sys.argv[1:] if argv is None else argv)
    if as_json:
        print(json.dumps(result, sort_keys=True))
    elif code == 0:
        print(result["message"])
    else:
        print(f"FAILED: {result['error']}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
