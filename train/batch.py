"""Global batch size is a recipe constant (256 / 256 / 128 in the paper); gradient accumulation
is whatever makes per-device batch x world size x accumulation equal it."""

from __future__ import annotations


class BatchError(ValueError):
    pass


def gradient_accumulation(global_batch: int, per_device: int, world_size: int) -> int:
    per_step = per_device * world_size
    if global_batch % per_step:
        raise BatchError(
            f"global_batch_size {global_batch} is not a multiple of per_device_train_batch_size {per_device} "
            f"x world size {world_size} = {per_step}; change train.common.per_device_train_batch_size or the launcher"
        )
    return global_batch // per_step
