"""Distributed training under ``torchrun``: process group, sharding, gathering.

Launched with ``torchrun --nproc_per_node N -m major2minor train ...`` the environment carries
RANK / WORLD_SIZE / LOCAL_RANK; without it everything here is the single-process identity.

Conventions (also in the README):

* ``train.batch_size`` is the *global* batch: every rank draws the same global index stream from
  the same seeded generator and takes its own contiguous slice of each global batch, so the union
  over ranks is exactly the single-process stream (the class histogram across ranks is the
  sampler's promise) and the stream is re-drawn each epoch.
* Random draws that are local to a rank (augmentation, M2m's translation) use generators seeded
  with ``seed + offset + 1000 * rank``.  Streamed data (``data.stream=true``) are the exception:
  their per-sample augmentation seed belongs to the sample's position in the global stream
  (``data/batches.py``), so streamed images do not depend on the number of ranks.
* Evaluation: each rank predicts a strided shard of the split; predictions are gathered from all
  ranks and every rank computes the same metrics on the whole split.
* Logging, figures and checkpoints come from rank 0; per-rank RNG states are gathered into the
  checkpoint so that resume restores every rank exactly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_environment() -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device_name: str) -> tuple:
    """Initialise the process group when launched by torchrun; returns (DistInfo, device)."""
    info = from_environment()
    if device_name == "auto":
        device_name = "cuda" if torch.cuda.is_available() else "cpu"
    if device_name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"train.device={device_name} but no CUDA device is available; use train.device=cpu.")
        device = torch.device("cuda", info.local_rank) if info.enabled else torch.device(device_name)
        if device.index is None:  # plain "cuda": the current device, with its index made explicit
            device = torch.device("cuda", torch.cuda.current_device())
        if device.index >= torch.cuda.device_count():
            raise ValueError(
                f"train.device={device_name} (device {device.index}) but only "
                f"{torch.cuda.device_count()} CUDA device(s) are visible; use cuda:0 .. "
                f"cuda:{torch.cuda.device_count() - 1}."
            )
        torch.cuda.set_device(device)
    else:
        device = torch.device(device_name)
    if info.enabled and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return info, device


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_object(obj: Any, info: DistInfo) -> List[Any]:
    if not info.enabled:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(t: torch.Tensor, info: DistInfo) -> torch.Tensor:
    if info.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def rank_slice(global_batch: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """This rank's contiguous share of one global batch (sizes differ by at most one)."""
    if not info.enabled:
        return global_batch
    return torch.tensor_split(global_batch, info.world_size)[info.rank]


def gather_in_order(local: torch.Tensor, total: int, info: DistInfo) -> torch.Tensor:
    """Inverse of a strided shard ``x[rank::world]``: all ranks' rows back in the original order."""
    if not info.enabled:
        return local
    pieces = all_gather_object(local.cpu(), info)
    out = torch.empty((total, *local.shape[1:]), dtype=local.dtype)
    for r, piece in enumerate(pieces):
        out[r :: info.world_size] = piece
    return out.to(local.device)


def shutdown() -> None:
    """End the process group if this process started one (the ``m2m`` command calls it on exit)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast_buffers(model: torch.nn.Module, info: DistInfo) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics).

    Parameters stay identical under DDP, but each rank updates its running statistics on its own
    local batches; evaluation and checkpoints must use one model, rank 0's.
    """
    if info.enabled:
        for buf in model.buffers():
            dist.broadcast(buf, src=0)
