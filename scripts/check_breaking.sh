#!/usr/bin/env bash
# Contract check: `buf breaking` against the previous commit on main.
# On the first commit that adds the protos there is nothing to compare with.
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=.venv/bin/buf
base=$(git rev-parse --verify -q HEAD~1 || true)
if [ -z "$base" ] || ! git cat-file -e "$base:protos" 2>/dev/null; then
  echo "buf breaking: no earlier contracts to compare with"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
git archive "$base" protos buf.yaml | tar -x -C "$tmp"
"$BUF" breaking --against "$tmp"
echo "buf breaking: no breaking change against $(git rev-parse --short "$base")"
