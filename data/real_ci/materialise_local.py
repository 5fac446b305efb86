"""Copy the labelled logs that may not be redistributed into data/real_ci/local/.

labels.jsonl lists them with "committed": false and "path": "mirror:<owner+name>/<path>";
they are read from the bare mirror /work/.mirror/<owner+name>/repo (git show HEAD:<path>).
Without the mirror this prints a message and does nothing. local/ is gitignored.

Usage: python data/real_ci/materialise_local.py [--mirror-root /work/.mirror]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mirror-root", type=Path, default=Path("/work/.mirror"))
    args = ap.parse_args(argv)
    entries = [json.loads(x) for x in (ROOT / "labels.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    todo = [e for e in entries if not e["committed"]]
    copied = missing = bad = 0
    for e in todo:
        mirror, _, path = e["path"].removeprefix("mirror:").partition("/")
        repo = args.mirror_root / mirror / "repo"
        if not repo.is_dir():
            missing += 1
            continue
        res = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{path}"], capture_output=True)
        if res.returncode != 0:
            missing += 1
            continue
        data = res.stdout
        if e.get("sha256") and hashlib.sha256(data).hexdigest() != e["sha256"]:
            bad += 1
            print(f"sha256 mismatch for {e['id']} (mirror at another commit?); not copied", file=sys.stderr)
            continue
        dest = ROOT / "local" / mirror / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(data)
        copied += 1
    if todo and not copied and missing:
        print(f"no mirror found under {args.mirror_root}: nothing materialised ({missing} log(s) unavailable)")
    else:
        print(f"materialised {copied} of {len(todo)} uncommitted log(s) into {ROOT / 'local'}"
              + (f"; {missing} unavailable" if missing else "") + (f"; {bad} sha256 mismatches" if bad else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
