#!/usr/bin/env bash
# The main job (README): lock the real Debian 12 shopping list against the live archive and summarise it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/cernvm-build lock recipes/debian-bookworm-minimal.toml -o closures/debian-bookworm-minimal.lock.toml
.venv/bin/cernvm-build show closures/debian-bookworm-minimal.lock.toml
