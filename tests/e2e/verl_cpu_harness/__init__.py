"""Test-only harness that runs verl's own trainer (``python -m verl.trainer.main_ppo``) on a CPU machine.

- ``install``: loaded into every verl process (driver, TaskRunner, workers, agent and reward loops)
  by ``VERL_USE_EXTERNAL_MODULES=verl_cpu_harness.install``; registers the CPU platform (``platform``)
  and a transformers rollout backend, ``rollout.name=hf_cpu`` (``rollout``). No file of verl changes.
- ``launch``: the environment and Hydra overrides of a CPU launch, and ``scripts/e2e_cpu.sh``'s entry.
- ``assets``: the tiny model, tokenizer and data set; ``reward``: their verifier.
- ``trace``: what the end-to-end tests read besides verl's metrics.

Nothing of it ships in verl-cov's wheel.
"""
