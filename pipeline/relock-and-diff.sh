#!/usr/bin/env bash
# CI job: re-lock every recipe, verify the committed locks' signatures, write the Markdown diff.
#
#   pipeline/relock-and-diff.sh [RECIPES_DIR] [CLOSURES_DIR] [REPORT.md]
#
# Environment: CERNVM_BUILD (the CLI, default .venv/bin/cernvm-build), CERNVM_BUILD_PUBKEY (public
# key the committed locks are signed with; when set, a missing or bad signature fails the job), or
# for keylessly signed locks CERNVM_BUILD_SIGNER_IDENTITY + CERNVM_BUILD_SIGNER_ISSUER (the CI
# identity that signs them) with CERNVM_BUILD_TRUSTED_ROOT (archived Sigstore trusted_root.json;
# default: the sigstore package's offline copy), CERNVM_BUILD_CACHE (metadata cache), STRICT=1
# (fail when any closure moved).
# Exit status: 0 all locks current (or only moved without STRICT), 1 signature failure, 2 drift
# under STRICT, 3 a recipe no longer resolves.
set -uo pipefail
recipes=${1:-recipes}
closures=${2:-closures}
report=${3:-closure-diff.md}
cvb=${CERNVM_BUILD:-.venv/bin/cernvm-build}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

status=0
drift=0
{
  echo "## Closure re-resolution"
  echo
} > "$report.tmp"
for recipe in "$recipes"/*.toml; do
  name=$(basename "$recipe" .toml)
  committed="$closures/$name.lock.toml"
  [ -f "$committed" ] || { echo "- \`$name\`: no committed lock (skipped)" >> "$report.tmp"; continue; }
  how=()
  if [ -n "${CERNVM_BUILD_PUBKEY:-}" ]; then
    how=(--key "$CERNVM_BUILD_PUBKEY")
  elif [ -n "${CERNVM_BUILD_SIGNER_IDENTITY:-}" ]; then
    how=(--identity "$CERNVM_BUILD_SIGNER_IDENTITY" --issuer "${CERNVM_BUILD_SIGNER_ISSUER:?set with CERNVM_BUILD_SIGNER_IDENTITY}")
    [ -n "${CERNVM_BUILD_TRUSTED_ROOT:-}" ] && how+=(--trusted-root "$CERNVM_BUILD_TRUSTED_ROOT")
  fi
  if ((${#how[@]})); then
    if ! out=$("$cvb" verify "$committed" "${how[@]}" 2>&1); then
      out=$(printf '%s\n' "$out" | grep -v '^WARNING' | tail -1)
      echo "- \`$name\`: **signature check failed**: ${out#error: }" >> "$report.tmp"
      status=1
    fi
  fi
  if ! err=$("$cvb" lock "$recipe" -o "$work/$name.lock.toml" -q 2>&1); then
    echo "- \`$name\`: **no longer resolves**: ${err%%$'\n'*}" >> "$report.tmp"
    [ "$status" = 0 ] && status=3
    continue
  fi
  if "$cvb" diff "$committed" "$work/$name.lock.toml" --exit-code > /dev/null; then
    echo "- \`$name\`: up to date" >> "$report.tmp"
  else
    drift=1
    "$cvb" diff "$committed" "$work/$name.lock.toml" --format markdown >> "$report.tmp"
    echo >> "$report.tmp"
  fi
done
mv "$report.tmp" "$report"
cat "$report"
if [ "$status" != 0 ]; then exit "$status"; fi
if [ "${STRICT:-0}" = 1 ] && [ "$drift" = 1 ]; then exit 2; fi
exit 0
