#!/usr/bin/env bash
# The test command (README, .ci/run): set up, then the whole suite, network and boot tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
exec .venv/bin/python -m pytest "$@"
