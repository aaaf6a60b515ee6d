"""What the installed verl offers, so one suite runs against every supported verl version."""

import torch
import verl
from packaging.version import Version
from verl.trainer.ppo.core_algos import agg_loss

VERL = Version(verl.__version__)
HAS_ENTRY_POINTS = VERL >= Version("0.9")  # verl.plugins discovered on `import verl`
HAS_LEGACY_ACTOR = VERL < Version("0.8")  # workers/actor/dp_actor.py computes the policy loss
HAS_ENGINE_LOSS = VERL >= Version("0.7")  # workers/utils/losses.py::ppo_loss (the only path from 0.8)
HAS_GLOBAL_BATCH_INFO = VERL >= Version("0.7")  # ActorConfig.global_batch_info, agg_loss's normalisers
ALL_AGG_MODES = ["token-mean", "token-sum", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm"]


def _supported(mode: str) -> bool:
    try:
        agg_loss(loss_mat=torch.ones(1, 1), loss_mask=torch.ones(1, 1), loss_agg_mode=mode)
    except ValueError:
        return False
    return True


AGG_MODES = [mode for mode in ALL_AGG_MODES if _supported(mode)]
