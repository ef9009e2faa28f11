"""Global batch size is a recipe constant (256 / 256 / 128 in the paper); gradient accumulation
is whatever makes per-device batch x world size x accumulation equal it."""

from __future__ import annotations


class BatchError(ValueError):
    pass


def batch_problem(global_batch: int, per_device: int, world_size: int, stage: str = "<stage>") -> str | None:
    """Why no whole accumulation count gives the global batch, naming the keys; None if one does."""
    per_step = per_device * world_size
    if global_batch % per_step == 0:
        return None
    return (f"train.stages.{stage}.global_batch_size={global_batch} is not a multiple of "
            f"train.common.per_device_train_batch_size={per_device} x world size {world_size} "
            f"(launcher.nnodes x launcher.nproc_per_node) = {per_step}; change one of them")


def gradient_accumulation(global_batch: int, per_device: int, world_size: int, stage: str = "<stage>") -> int:
    problem = batch_problem(global_batch, per_device, world_size, stage)
    if problem:
        raise BatchError(problem)
    return global_batch // (per_device * world_size)
