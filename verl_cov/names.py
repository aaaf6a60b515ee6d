"""What verl-cov's plugin needs before any other verl-cov module has finished importing: the names of its
policy-loss modes in verl's registry, and the verl version from which verl trains through its engine workers.

A leaf that imports nothing: verl imports the plugin while verl itself is being imported, possibly from inside
the import of another verl-cov module (see ``verl_cov.plugin``).
"""

CLIP_COV = "verl_cov.clip_cov"
KL_COV = "verl_cov.kl_cov"
FORKING = "verl_cov.forking"
VANILLA = "verl_cov.vanilla"
MODES = (CLIP_COV, KL_COV, FORKING, VANILLA)

ENGINE_WORKERS_SINCE = "0.8"  # verl's engine workers: one BaseEngine.train_batch call per mini-batch and rank
