"""Data-parallel training under torchrun (docs/distributed.md). One process per device; torchrun sets
WORLD_SIZE, RANK and LOCAL_RANK. Outside torchrun every function here is a no-op for a world of one, so the
single-process trainer runs exactly as before.

Design, in short:
- training: each rank takes a disjoint 1/world share of the seeded EpochSampler order (`ShardSampler`);
  the share is padded by repeating the order's first samples so every rank runs the same number of
  batches (DDP needs that, like torch's DistributedSampler);
- the model is wrapped in DistributedDataParallel, rebuilt whenever a finetune phase changes which
  parameters train (DDP fixes its parameter set when it is built, so frozen ones are simply left out);
- validation is sharded (`ValShard`): each rank scores a contiguous run of the whole batches one process
  makes, with no padding, and the tasks combine the shards (`summed` counts, `joined` records and detection
  results on rank 0), so rank 0's metrics are exactly one process's; every rank then takes rank 0's scalar
  metrics, for best.pt and early stopping decisions taken identically everywhere;
- only rank 0 writes files.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from visiontl.data.sampling import EpochSampler
from visiontl.errors import ConfigError, TrainingError

log = logging.getLogger("visiontl")

# A rank that finishes its val shard (or rank 0, scoring the gathered detections) waits in a collective for
# the others; gloo's and nccl's default 30 minutes can be too short for a large val set.
TIMEOUT = timedelta(hours=2)


def launched() -> bool:
    """True under torchrun (or any launcher that sets the same environment) with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    return rank() == 0


def init(device: str = "auto") -> None:
    """Join the process group torchrun describes (nccl when training on CUDA, else gloo); a no-op outside
    torchrun. `device` is train.device: 'cpu' means gloo even where CUDA exists."""
    if not launched() or active():
        return
    backend = "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend, timeout=TIMEOUT)


@contextmanager
def session(device: str = "auto") -> Iterator[None]:
    """One run's time in the process group torchrun describes: joined at the start (a no-op outside torchrun,
    or where the caller has joined it already) and left at the end by whoever joined it. Ranks other than 0
    log warnings only, so a console shows one copy of the progress lines: rank 0's."""
    joined = not active()
    init(device)
    joined = joined and active()
    quiet = active() and not is_main()
    level = log.level
    if quiet:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        if quiet:
            log.setLevel(level)
        if joined:
            shutdown()


def backend() -> str:
    return str(dist.get_backend()) if active() else "none"


def shutdown() -> None:
    if active():
        dist.destroy_process_group()


def device_for(device: torch.device) -> torch.device:
    """Each rank's own GPU (torchrun's LOCAL_RANK); CPU stays CPU."""
    if active() and device.type == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


class ShardSampler(Sampler[tuple[int, int]]):
    """This rank's share of an EpochSampler's order: positions rank, rank + world, ... of the order, padded
    by wrapping around to the order's start so all ranks get ceil(len / world) items. Every rank computes
    the same order (it depends on seed and epoch only), so the shares are disjoint and cover the epoch."""

    def __init__(self, inner: EpochSampler, rank: int, world: int):
        self.inner, self.rank, self.world = inner, rank, world

    def set_epoch(self, epoch: int) -> None:
        self.inner.set_epoch(epoch)

    def __len__(self) -> int:
        return -(-len(self.inner) // self.world)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        items = list(self.inner)
        padded = items + items[: len(self) * self.world - len(items)]
        return iter(padded[self.rank :: self.world])


def shard(sampler: EpochSampler) -> EpochSampler | ShardSampler:
    return ShardSampler(sampler, rank(), world_size()) if active() else sampler


class ValShard(Sampler[tuple[int, int]]):
    """This rank's share of the val order: a contiguous run of the whole batches one process makes of it (see
    `shard_range`), so every image is scored once, in the same batch as in one process (detection and
    segmentation pad a batch to its largest image, which changes the outputs near the borders). Contiguous
    shards joined in rank order are the val order."""

    def __init__(self, inner: EpochSampler, batch_size: int, rank: int, world: int):
        self.inner = inner
        self.start, self.stop = shard_range(len(inner), batch_size, rank, world)

    def __len__(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return itertools.islice(iter(self.inner), self.start, self.stop)


def shard_range(size: int, batch_size: int, rank: int, world: int) -> tuple[int, int]:
    """Positions [start, stop) of a `size`-item order that `rank` of `world` validates: whole batches, the first
    ranks taking one batch more where the batches do not divide (so rank 0 is never empty while others are
    not); nothing padded or repeated, unlike torch's DistributedSampler."""
    per_rank, extra = divmod(-(-size // batch_size), world)
    first = rank * per_rank + min(rank, extra)
    count = per_rank + (rank < extra)
    return min(size, first * batch_size), min(size, (first + count) * batch_size)


def val_shard(sampler: EpochSampler, batch_size: int) -> EpochSampler | ValShard:
    return ValShard(sampler, batch_size, rank(), world_size()) if active() else sampler


def describe_shards(size: int, batch_size: int, world: int) -> str:
    """The log's line on sharded validation: every rank's share."""
    counts = [stop - start for start, stop in (shard_range(size, batch_size, r, world) for r in range(world))]
    return (f"{size} images in {-(-size // batch_size)} batches of {batch_size}, sharded over {world} ranks: "
            + ", ".join(f"rank {r} scores {n}" for r, n in enumerate(counts)))


def same_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (batch norm running statistics) on every rank. Each rank's last training forward passes
    updated its own; the val shards must all be scored by the model rank 0 saves."""
    if not active():
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def summed(counts: torch.Tensor) -> torch.Tensor:
    """`counts` (a confusion matrix) summed over all ranks (an all-reduce), on the device it came from."""
    total = counts.clone().cuda() if dist.get_backend() == "nccl" else counts.clone()
    dist.all_reduce(total)
    return total.to(counts.device)


def joined(parts: tuple[list, ...]) -> tuple[list, ...] | None:
    """Rank 0: each of the ranks' lists in `parts` concatenated over the ranks in rank order (with ValShard,
    the val order); the other ranks: None. Small objects only: they travel pickled."""
    shards: list[Any] | None = [None] * world_size() if is_main() else None
    dist.gather_object(parts, shards, dst=0)
    if shards is None:
        return None
    return tuple([item for shard in shards for item in shard[i]] for i in range(len(parts)))


def wrap(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DDP over the parameters that train now (call again after a phase change); the bare model alone."""
    if not active():
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def sync_batchnorm(model: torch.nn.Module, enabled: bool, device: torch.device) -> torch.nn.Module:
    """train.sync_bn: batch statistics over all ranks. Only meaningful in a distributed run; needs CUDA."""
    if not enabled or not active():
        return model
    if device.type != "cuda":
        raise ConfigError("train.sync_bn: SyncBatchNorm needs CUDA devices (nccl); set it to false on CPU")
    log.info("sync_bn: batch norm statistics synchronised across %d ranks", world_size())
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def no_sync(model: torch.nn.Module, sync: bool) -> AbstractContextManager:
    """Skip DDP's gradient all-reduce on micro-steps that do not end an optimizer step."""
    if sync or not hasattr(model, "no_sync"):
        return nullcontext()
    return model.no_sync()


def sum_over_ranks(*values: float) -> list[float]:
    if not active():
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return t.tolist()


def step_flags(loss: torch.Tensor, stop_requested: bool) -> tuple[bool, bool]:
    """(loss finite on every rank, a stop asked for on any rank): one host sync, and under DDP one small
    collective. A rank whose loss is NaN has sent NaN into everyone's averaged gradients, so all ranks skip
    or stop together; a signal that reached one rank stops all of them at the same step."""
    flags = torch.stack([(~torch.isfinite(loss)).to(torch.int32), torch.tensor(int(stop_requested), device=loss.device)])
    if active():
        if dist.get_backend() == "nccl":
            flags = flags.cuda()
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    bad, stop = flags.tolist()
    return not bad, bool(stop)


def from_main(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (also a barrier)."""
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def same_on_every_rank(value: str, what: str) -> None:
    """Refuse to go on when this rank's `value` differs from rank 0's (e.g. the val split each rank chose from
    its own view of the files: a file system that lists differently on one node would split differently)."""
    main_value = from_main(value)
    if main_value != value:
        raise TrainingError(f"rank {rank()}: {what} differs from rank 0's; every rank must see the same files")


def barrier() -> None:
    if active():
        dist.barrier()


def parameter_digest(model: torch.nn.Module) -> str:
    """sha256 of the parameters in state_dict order (buffers left out: BN running stats are each rank's own
    between DDP's broadcasts)."""
    h = hashlib.sha256()
    names = {n for n, _ in model.named_parameters()}
    for name, value in model.state_dict().items():
        if name in names:
            h.update(name.encode())
            h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def write_test_digest(model: torch.nn.Module) -> None:
    """Test hook: with VISIONTL_TEST_RANK_DIGEST_DIR set, each rank writes rank<r>.sha256 of its final
    parameters, so tests can check the ranks ended identical. Unset, nothing happens."""
    folder = os.environ.get("VISIONTL_TEST_RANK_DIGEST_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / f"rank{rank()}.sha256").write_text(parameter_digest(model) + "\n")
