#!/usr/bin/env bash
# Ruff, then the fast test suite once per tested verl version, each in its own venv:
# 0.9.1 (engine ppo_loss) and 0.7.1 (legacy dp_actor). No GPU, no downloads of models or data.
set -euo pipefail
cd "$(dirname "$0")/.."
read -r -a versions <<< "${VERL_VERSIONS:-0.9.1 0.7.1}"
status=0
for version in "${versions[@]}"; do
  VENV="$(VERL_VERSION="$version" bash scripts/setup_venv.sh | tail -n 1)"
  echo "=== verl $version ($VENV)"
  if [ "$version" = "${versions[0]}" ]; then
    "$VENV/bin/ruff" check .
  fi
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "not slow and not gpu" "$@" || status=1
done
exit $status
