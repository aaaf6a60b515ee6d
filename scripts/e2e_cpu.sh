#!/usr/bin/env bash
# e2e_cpu.sh OUT_DIR [hydra overrides...]: verl's own trainer, `python -m verl.trainer.main_ppo`, on
# this CPU machine, with verl-cov installed as users install it. A tiny random-init Qwen2, its
# tokenizer and a parquet data set of "x+y=" prompts are built locally into OUT_DIR/assets; verl's
# file logger writes OUT_DIR/metrics.jsonl. Extra arguments are Hydra overrides, e.g.
#   bash scripts/e2e_cpu.sh runs/e2e actor_rollout_ref.actor.policy_loss.loss_mode=verl_cov.kl_cov
# Environment: VERL_VERSION=0.9.1 (default) or 0.7.1 picks the venv of scripts/setup_venv.sh (PYTHON=...
# runs another interpreter); STEPS=3 training steps; GPUS=1 fake accelerators (data-parallel workers).
# The CPU platform and rollout are test-only (tests/e2e/verl_cpu_harness) and load into every verl
# process through VERL_USE_EXTERNAL_MODULES; no file of verl is changed.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 OUT_DIR [hydra overrides...]" >&2; exit 2; }
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-$(VERL_VERSION="${VERL_VERSION:-0.9.1}" bash "$REPO/scripts/setup_venv.sh" | tail -n 1)/bin/python}"
export PYTHONPATH="$REPO/tests/e2e${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m verl_cpu_harness.launch "$@"
