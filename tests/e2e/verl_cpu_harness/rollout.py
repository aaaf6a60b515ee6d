"""A transformers rollout for verl's agent-loop server path, so ``main_ppo`` runs without vLLM or a GPU.

verl registers vllm, sglang and trtllm as rollout backends; each is three pieces, and so is this one
(``actor_rollout_ref.rollout.name=hf_cpu``):

- ``HFServer`` (``server``): a Ray actor holding its own copy of the policy. ``generate`` is verl's
  token-in-token-out call (``TokenOutput``); it samples at the request's temperature / top-p / top-k
  (temperature 0: greedy) up to ``rollout.response_length`` tokens or EOS, and returns the sampled
  tokens' log-probs. Under ``rollout.full_determinism`` verl passes stable request ids ("det-<i>"), and
  each request draws from a generator seeded by (request id, prompt, weight version, how often that
  triple came before), so a resumed run samples what the uninterrupted run sampled; the count keeps
  the n samples of a prompt apart where verl reuses one id for all of them (the v1 trainer).
- ``HFReplica``: verl's ``RolloutReplica`` for the hybrid mode, one server per replica.
- ``HFServerAdapter``: the rollout object inside each actor worker. verl's naive checkpoint engine
  calls its ``update_weights`` with the actor's full tensors before every rollout; it hands them to the
  replica's server.
"""

from __future__ import annotations

import ray
import torch
from verl.workers.rollout import base
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, RolloutReplicaRegistry

from verl_cpu_harness.server import HFServer

NAME = "hf_cpu"
SERVER_NAME = "hf_cpu_server_{replica_rank}"


class HFReplica(RolloutReplica):
    """verl's hybrid replica with an ``HFServer`` in place of the vLLM server."""

    async def launch_servers(self):
        name = SERVER_NAME.format(replica_rank=self.replica_rank)
        server = (
            ray.remote(HFServer)
            .options(name=name, num_cpus=0, max_concurrency=self.max_concurrency)
            .remote(
                name,
                self.model_config.path,
                self.config.response_length,
                self.config.max_model_len,
                getattr(self.config, "seed", 0),  # verl 0.7 has no rollout.seed
            )
        )
        self.servers = [server]
        self._server_handle = server
        self._server_address = name  # verl's load balancer keys servers by this string


class HFServerAdapter(BaseRollout):
    """The rollout object in an actor worker: forwards the actor's weights to its replica's server."""

    def __init__(self, config, model_config, device_mesh, *args, **kwargs):
        super().__init__(config, model_config, device_mesh)
        replica_size = self.config.tensor_model_parallel_size * self.config.data_parallel_size
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        self.leader = rank % replica_size == 0
        self.server_name = SERVER_NAME.format(replica_rank=rank // replica_size)

    async def resume(self, tags: list[str]):
        return None

    async def release(self):
        return None

    async def update_weights(self, weights, global_steps: int | None = None, **kwargs):
        # Every rank walks the generator: FSDP gathers each full tensor collectively.
        state = {name: tensor.detach().to("cpu", torch.float32).clone() for name, tensor in weights}
        if self.leader:
            await ray.get_actor(self.server_name).load_weights.remote(state, global_steps)


def register() -> None:
    """Add ``hf_cpu`` to verl's rollout registries (replica: agent-loop server side; adapter: actor worker side)."""
    RolloutReplicaRegistry.register(NAME, lambda: HFReplica)
    base._ROLLOUT_REGISTRY[(NAME, "async")] = f"{__name__}.HFServerAdapter"
