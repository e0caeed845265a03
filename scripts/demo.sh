#!/usr/bin/env bash
# README command 1: set up, then run the demo (extra arguments go to `catlip demo`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/catlip" demo "$@"
