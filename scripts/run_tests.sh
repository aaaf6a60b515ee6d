#!/usr/bin/env bash
# Ruff, then per tested verl version, each in its own venv: the fast suite, then the end-to-end suite
# (verl's own trainer, python -m verl.trainer.main_ppo, on CPU); on the first version also the CPU study's
# robustness check (marker study). verl 0.9.1 (engine workers, v0 and v1 trainers) and 0.7.1 (legacy
# dp_actor). No GPU, no download of models or data. Extra arguments go to every pytest call; E2E=0 skips
# the end-to-end suite and STUDY=0 the robustness check.
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
  "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m "not slow and not gpu and not e2e and not study" "$@" || status=1
  if [ "${STUDY:-1}" != 0 ] && [ "$version" = "${versions[0]}" ]; then
    echo "=== verl $version: the study's robustness check"
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m study tests/test_study_robust.py "$@" || status=1
  fi
  if [ "${E2E:-1}" != 0 ]; then
    echo "=== verl $version: end to end"
    "$VENV/bin/python" -m pytest -q -p no:cacheprovider -m e2e tests/e2e "$@" || status=1
  fi
done
exit $status
