"""The CPU study: a tiny causal LM trained with RL on a verifiable task, once per loss mode, through verl's
own GRPO advantage estimator and ``ppo_loss``."""
