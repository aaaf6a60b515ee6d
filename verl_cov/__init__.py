"""verl-cov: Clip-Cov and KL-Cov policy losses and entropy-mechanism metrics for verl, as a plugin.

Importing the package registers the modes ``verl_cov.clip_cov``, ``verl_cov.kl_cov`` and ``verl_cov.vanilla``
with verl.
"""

from verl_cov.plugin import register

__version__ = "0.1.0"

register()
