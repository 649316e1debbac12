"""Several processes training one fold (torchrun): who this process is, and the few collective steps medal needs.

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous); without them the process is alone (world 1)
and every function here is a no-op. Rank 0 alone writes files, logs and talks to W&B; every rank trains its
shard of each epoch's batches and predicts its shard of the validation images, which are gathered so that every
rank sees the whole validation set (and so takes the same decisions).
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world() -> World:
    """This process's place, from torchrun's environment (alone when it is not set)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World()
    return World(int(os.environ.get("RANK", "0")), size, int(os.environ.get("LOCAL_RANK", "0")))


def start(device: torch.device) -> World:
    """Join the process group (NCCL on CUDA, gloo on CPU) when torchrun started several processes."""
    here = world()
    if here.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return here


def stop() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def device_for(device: torch.device) -> torch.device:
    """Each process's own GPU (cuda:LOCAL_RANK) under torchrun; the device as it is otherwise."""
    here = world()
    if device.type == "cuda" and here.distributed:
        torch.cuda.set_device(here.local_rank)
        return torch.device("cuda", here.local_rank)
    return device


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def gather(obj):
    """Every rank's `obj`, in rank order, on every rank ([obj] when alone)."""
    if not dist.is_initialized():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def sync_batchnorm(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model with SyncBatchNorm (statistics over every rank's batch) on CUDA; torch's SyncBatchNorm runs on
    GPUs only, so on CPU the model is left as it is, with a warning."""
    if device.type != "cuda":
        from medal.core.log import get_logger

        get_logger().warning("runtime.sync_bn: SyncBatchNorm runs on GPUs only; each CPU process keeps its own "
                             "BatchNorm statistics")
        return model
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def share_buffers(*modules: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank. DDP keeps the weights equal, but each rank's
    last step updates the statistics from its own batch: before a validation every rank must hold the model
    that rank 0 would save, or the gathered score would mix slightly different models."""
    if not dist.is_initialized():
        return
    for module in modules:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=0)


def only_main(context):
    """`context` on rank 0, a do-nothing context elsewhere (a lock that only the writer needs)."""
    return context if world().main else contextlib.nullcontext()
