#!/usr/bin/env bash
# One-time, idempotent set-up: Debian resources (WordNet, POS-tagger tables) and .venv with catlip installed.
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run on its own.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEBS="wordnet-base wordnet-sense-index liblingua-en-tagger-perl"
PY="${PYTHON:-python3}"

missing=""
for p in $DEBS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "[setup] installing Debian packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  else
    echo "[setup] missing Debian packages:$missing" >&2
    echo "[setup] run: sudo apt-get update && sudo apt-get install -y$missing" >&2
    exit 1
  fi
fi

stamp="$ROOT/.venv/.catlip-setup"
want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$ROOT/.venv/bin/catlip" ]; then
  exit 0
fi
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  echo "[setup] creating .venv"
  "$PY" -m venv "$ROOT/.venv" || { echo "[setup] needs python3-venv: apt-get install -y python3-venv" >&2; exit 1; }
fi
echo "[setup] installing catlip and its dependencies into .venv (first time: a few minutes)"
"$ROOT/.venv/bin/pip" install -q --disable-pip-version-check -e "$ROOT[dev]" 2>&1 | grep -v "^WARNING: Location" || true
# CLIP_benchmark's metric functions, for the agreement test; --no-deps: its captioning extras (transformers,
# pycocoevalcap) are not needed by the zero-shot and retrieval metrics and are large
"$ROOT/.venv/bin/pip" install -q --disable-pip-version-check --no-deps "clip-benchmark==1.6.2" 2>&1 \
  | grep -v "^WARNING: Location" || true
"$ROOT/.venv/bin/python" -c "import catlip, torch, torchvision, timm, open_clip, webdataset, clip_benchmark.metrics.zeroshot_retrieval" \
  || { echo "[setup] install failed (see pip output above)" >&2; exit 1; }
echo "$want" > "$stamp"
