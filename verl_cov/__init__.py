"""verl-cov: Clip-Cov and KL-Cov policy losses and entropy-mechanism metrics for verl, as a plugin.

Importing the package loads nothing: verl loads the plugin, ``verl_cov.plugin``, in every process
(``verl.plugins`` entry point, or ``actor_rollout_ref.model.external_lib=verl_cov.plugin``), and
``verl-cov fit`` / ``compare`` import neither verl nor torch.
"""

__version__ = "0.2.0"
