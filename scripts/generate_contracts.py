"""Generate the Python code of the protobuf contracts (never edited by hand).

Writes `healing_guard/**/*_pb2.py`, `*_pb2_grpc.py` and `.pyi` stubs at the
repository root (gitignored), so `import healing_guard.detector.v1.detector_pb2`
works from the root. Regenerates only when a .proto is newer than its output.
"""

from __future__ import annotations

import sys
from pathlib import Path

import grpc_tools
from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(force: bool = False) -> list[Path]:
    sources = sorted(PROTOS.rglob("*.proto"))
    stale = [p for p in sources if force or _is_stale(p)]
    if not stale:
        return []
    include = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={ROOT}",
        f"--grpc_python_out={ROOT}",
        f"--pyi_out={ROOT}",
        *[str(p) for p in sources],
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed; see the messages above")
    for folder in {ROOT / p.relative_to(PROTOS).parent for p in sources}:
        # Regular packages (not namespace packages) so tools and mypy find them.
        for parent in [folder, *folder.parents]:
            if parent == ROOT:
                break
            (parent / "__init__.py").touch()
    return stale


def _is_stale(proto: Path) -> bool:
    out = ROOT / proto.relative_to(PROTOS).with_name(proto.stem + "_pb2.py")
    return not out.exists() or out.stat().st_mtime < proto.stat().st_mtime


if __name__ == "__main__":
    changed = generate(force="--force" in sys.argv)
    print(f"generated {len(changed)} contract(s)" if changed else "contracts up to date")
