#!/usr/bin/env bash
# The main job (README): the real Debian 12 shopping list from the live archive to a published, signed
# CernVM-FS snapshot (and a boot ISO once that stage is in the build) — one command, pipeline/debian-bookworm.toml.
# Run it twice: the second run re-resolves the lock and, if the archive has not moved, publishes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
.venv/bin/cernvm-build build pipeline/debian-bookworm.toml "$@"
