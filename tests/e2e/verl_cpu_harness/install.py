"""Imported inside ``import verl`` in every verl process (``VERL_USE_EXTERNAL_MODULES=verl_cpu_harness.install``).

The device patch comes first: verl 0.7's modules bind ``verl.utils.device``'s functions when imported,
so the rollout and trace modules, which import verl's workers, are imported after it.
"""

import os

import torch

from verl_cpu_harness import platform

# Several torch processes share two cores; intra-op threads only make them wait for each other.
torch.set_num_threads(1)
# verl registers its FSDP engine for cuda and npu only; the same engine runs on CPU under FSDP2.
os.environ.setdefault("VERL_ENGINE_DEVICE", "cuda")
os.environ.setdefault("VERL_ENGINE_VENDOR", "nvidia")

platform.patch_process_group_backend()
try:
    import verl.plugin.platform  # noqa: F401  verl >= 0.9: a platform registry
except ImportError:
    platform.patch_legacy_device_utils()
else:
    platform.register_platform()

from verl_cpu_harness import rollout, trace  # noqa: E402  after the device patch (see above)

rollout.register()
trace.record_global_selection()
trace.record_global_forking()
