"""Running under ``torchrun``: PyTorch's own distributed engine (DistributedDataParallel), NCCL on
GPUs and gloo on CPUs. Without torchrun (no ``WORLD_SIZE`` in the environment, or 1) everything
runs in one process exactly as before."""

from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from mamol_core.errors import MamolError, PeerStopped


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: its rank, the number of processes, its rank on this node."""

    rank: int = 0
    world: int = 1
    local: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes files and logs progress (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def ranks_from_environment() -> Ranks:
    """Rank, world size and local rank as torchrun sets them (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``)."""
    try:
        return Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise MamolError("RANK, WORLD_SIZE or LOCAL_RANK is not a number; start distributed runs with torchrun") from None


def current() -> Ranks:
    """The ranks of an initialised process group, else a single process."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Ranks()


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[tuple[Ranks, torch.device]]:
    """Join the torchrun job (if any) for the block: NCCL with one GPU per local rank, else gloo.
    Yields the ranks and the device this process computes on."""
    ranks = ranks_from_environment()
    if not ranks.distributed:
        yield ranks, device
        return
    if device.type == "cuda":
        if torch.cuda.device_count() <= ranks.local:
            raise MamolError(f"rank {ranks.rank}: no GPU cuda:{ranks.local} on this node; start torchrun with --nproc_per_node at "
                             f"most {torch.cuda.device_count()}")
        device = torch.device("cuda", ranks.local)
        torch.cuda.set_device(device)
    store, rank, world = next(dist.rendezvous("env://"))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=attempt_store(store, world), rank=rank,
                            world_size=world)
    try:
        yield ranks, device
        dist.barrier()  # no rank closes its connections while another still finishes its last collective
    finally:
        # objects that still hold the group (a DistributedDataParallel wrapper in a reference cycle) are
        # freed now, while the interpreter is alive: freed during its shutdown, gloo's worker threads
        # were seen to abort the process (SIGABRT, "terminate called without an active exception")
        gc.collect()
        dist.destroy_process_group()
        gc.collect()


def attempt_store(store, world: int):
    """``store`` under a prefix of its own for this attempt of the job. torchrun's agent keeps one
    key-value store across restarts (``--max-restarts``): without a prefix per attempt a restarted
    rank may read a dead rank's address and hang connecting to it. On one node every worker restarts
    together and ``TORCHELASTIC_RESTART_COUNT`` counts the attempts; on several nodes the agents of
    healthy nodes restart their workers without counting, so the attempt is counted by arrivals in
    the store instead (every rank of an attempt arrives once)."""
    if int(os.environ.get("LOCAL_WORLD_SIZE", world)) == world:
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    else:
        attempt = str((store.add("mamol/arrivals", 1) - 1) // world)
    return dist.PrefixStore(f"mamol/attempt-{attempt}", store)


def all_sum(values: torch.Tensor) -> torch.Tensor:
    """``values`` summed over all ranks (unchanged in a single process)."""
    if current().distributed:
        values = values.clone()
        dist.all_reduce(values)
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether ``flag`` is set on any rank (so that every rank stops at the same step)."""
    if not current().distributed:
        return flag
    return bool(all_sum(torch.tensor([1.0 if flag else 0.0], device=device)).item() > 0)


def check_same_weights(model: torch.nn.Module, device: torch.device) -> None:
    """Stop unless every rank holds rank 0's trainable weights (DistributedDataParallel keeps them equal)."""
    if not current().distributed:
        return
    local = torch.stack([p.detach().double().sum() for p in model.parameters() if p.requires_grad]).to(device)
    reference = local.clone()
    dist.broadcast(reference, 0)
    differs = (reference - local).abs().max().item() > 1e-9 * max(1.0, local.abs().max().item())
    if any_rank(differs, device):
        raise MamolError("the ranks ended training with different weights; report this with the torchrun command used")


@contextlib.contextmanager
def stop_together(device: torch.device) -> Iterator[None]:
    """Run the block on every rank and meet afterwards: when it fails with a :class:`MamolError` on
    any rank, every rank stops; the lowest failing rank with its own message, the others with
    :class:`PeerStopped`, so the job prints one clear line (and no rank waits for one that left).
    In a single process the error is simply raised."""
    failure = None
    try:
        yield
    except MamolError as exc:
        if not current().distributed:
            raise
        failure = exc
    ranks = current()
    if not ranks.distributed:
        return
    flags = torch.zeros(ranks.world, device=device)
    flags[ranks.rank] = 1.0 if failure is not None else 0.0
    failed = all_sum(flags).nonzero().flatten().tolist()
    if not failed:
        return
    if failure is not None and failed[0] == ranks.rank:
        raise failure
    raise PeerStopped(f"rank {ranks.rank}: stopped because rank {failed[0]} failed")
