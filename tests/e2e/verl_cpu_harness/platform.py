"""A CPU "accelerator" for verl's trainer: device ``cpu``, collectives over gloo, FSDP2 on host memory.

verl >= 0.9 chooses its platform from a registry (``VERL_PLATFORM``); verl 0.7 and 0.8 hard-code
CUDA-or-NPU in ``verl.utils.device``, which ``patch_legacy_device_utils`` redirects. Ray still
schedules workers on the resource "GPU", declared with a fake count (``ray_init.num_gpus``).
"""

from __future__ import annotations

import contextlib
import os
import types

import torch

BACKEND = "gloo"


def _device_module() -> types.SimpleNamespace:
    """``torch.cpu`` plus the CUDA-only calls verl makes on its device module, as no-ops."""
    calls = {name: getattr(torch.cpu, name) for name in dir(torch.cpu) if not name.startswith("_")}
    zero = lambda *args, **kwargs: 0  # noqa: E731
    nothing = lambda *args, **kwargs: None  # noqa: E731
    defaults = {
        "current_device": lambda: "cpu",
        "device_count": lambda: 1,
        "set_device": nothing,
        "synchronize": nothing,
        "empty_cache": nothing,
        "manual_seed": torch.manual_seed,
        "manual_seed_all": torch.manual_seed,
        "memory_allocated": zero,
        "memory_reserved": zero,
        "max_memory_allocated": zero,
        "max_memory_reserved": zero,
        "reset_peak_memory_stats": nothing,
        "mem_get_info": lambda *args, **kwargs: (0, 0),
        "is_available": lambda: True,
        "get_device_name": lambda *args, **kwargs: "CPU",
        "set_per_process_memory_fraction": nothing,
        "ipc_collect": nothing,
        "get_rng_state": torch.get_rng_state,
        "set_rng_state": torch.set_rng_state,
    }
    return types.SimpleNamespace(**{**calls, **defaults})


DEVICE_MODULE = _device_module()


def collapse_backend(backend: str | None) -> str | None:
    """verl asks for ``cpu:gloo,<device>:<backend>``; with device ``cpu`` that names cpu twice, which torch
    refuses. Keep one entry per device."""
    if not backend or "," not in backend:
        return backend
    entries = dict(entry.split(":", 1) for entry in backend.split(","))
    return ",".join(f"{device}:{name}" for device, name in entries.items())


def patch_process_group_backend() -> None:
    """Route ``torch.distributed.init_process_group`` through ``collapse_backend`` (once per process)."""
    import torch.distributed as dist

    if getattr(dist.init_process_group, "__cpu_harness__", False):
        return
    original = dist.init_process_group

    def init_process_group(backend=None, *args, **kwargs):
        return original(collapse_backend(backend), *args, **kwargs)

    init_process_group.__cpu_harness__ = True
    dist.init_process_group = init_process_group


def register_platform() -> None:
    """Register the ``cpu`` platform with verl >= 0.9's platform registry and select it."""
    from verl.plugin.platform.platform_base import PlatformBase
    from verl.plugin.platform.platform_manager import PlatformRegistry

    @PlatformRegistry.register(platform="cpu")
    class PlatformCPU(PlatformBase):
        device_name = "cpu"
        vendor_name = "cpu"
        device_module = DEVICE_MODULE

        def is_available(self) -> bool:
            return True

        def current_device(self):
            return "cpu"

        def device_count(self) -> int:
            return 1

        def set_device(self, device_index) -> None:
            return None

        def synchronize(self, device_index=None) -> None:
            return None

        def manual_seed(self, seed: int) -> None:
            torch.manual_seed(seed)

        def manual_seed_all(self, seed: int) -> None:
            torch.manual_seed(seed)

        def set_allocator_settings(self, settings: str) -> None:
            return None

        def empty_cache(self) -> None:
            return None

        def get_device_capability(self, device_index: int = 0):
            return None, None

        def communication_backend_name(self) -> str:
            return BACKEND

        def visible_devices_envvar(self) -> str:
            return "CUDA_VISIBLE_DEVICES"

        @contextlib.contextmanager
        def nvtx_range(self, msg: str):
            yield

        def profiler_start(self) -> None:
            return None

        def profiler_stop(self) -> None:
            return None

        def ray_resource_name(self) -> str:
            return "GPU"  # Ray hands out the fake "GPU" count declared in ray_init

        def ray_noset_envvars(self) -> list[str]:
            return []

        def is_ipc_supported(self) -> bool:
            return False

        def cudart(self):
            return None

    os.environ["VERL_PLATFORM"] = "cpu"


def patch_legacy_device_utils() -> None:
    """verl 0.7 / 0.8: ``verl.utils.device`` answers "NPU" and "nccl" when CUDA is absent; answer cpu/gloo.

    Modules that imported these names before the patch keep the originals, so this must run inside
    ``import verl`` (``VERL_USE_EXTERNAL_MODULES``), before verl's workers are imported.
    """
    import verl.utils.device as device

    device.get_device_name = lambda: "cpu"
    device.get_torch_device = lambda: DEVICE_MODULE
    device.get_device_id = lambda: "cpu"
    device.get_nccl_backend = lambda: BACKEND
    device.get_resource_name = lambda: "GPU"
    device.get_visible_devices_keyword = lambda: "CUDA_VISIBLE_DEVICES"
    device.is_support_ipc = lambda: False
