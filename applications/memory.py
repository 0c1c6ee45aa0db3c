"""Refuses a training configuration whose activations cannot fit in memory, before building it.

A fine-tuning recipe's 384 px applied to an 8x8-pixel backbone with 2x2 patches asked for
36,864 tokens and died in its first step trying to allocate 4.2 TB, with a traceback. The
backward pass keeps, per encoder block and example, at least the block's inputs to its
products and non-linearities (about 8 vectors of the width and 2 of the MLP width per token)
and, where attention is not fused, the softmax (heads x tokens^2). That lower bound, times
the blocks and the batch on one device, against the memory of the device that trains, is a
test that only refuses what certainly cannot run.
"""

from __future__ import annotations

import os

import keras

from applications.options import UsageError

GIB = 2**30


def activation_bytes(arch: dict, image_size: tuple[int, int], batch: int,
                     bytes_per_value: int) -> tuple[int, int]:
    """(bytes, tokens): a lower bound of the activations a training step keeps.

    Args:
        arch: `ViT(...)` architecture kwargs (patch_size, hidden_size, num_layers, ...).
        image_size: (height, width) in pixels.
        batch: Examples on one device.
        bytes_per_value: 4 for float32, 2 under a mixed-precision policy.

    Example:

    >>> arch = dict(patch_size=16, hidden_size=768, num_layers=12, num_heads=12,
    ...             mlp_dim=3072, classifier="token")
    >>> size, tokens = activation_bytes(arch, (224, 224), 1, 4)
    >>> tokens, size == 12 * 4 * (197 * (8 * 768 + 2 * 3072) + 12 * 197**2)
    (197, True)
    """
    patch = arch.get("patch_size", 16)
    patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
    stride = 16 if arch.get("resnet_num_layers") else 1  # the hybrid's ResNet stem
    grid = (image_size[0] // stride // patch[0]) * (image_size[1] // stride // patch[1])
    tokens = grid + (1 if arch.get("classifier", "token") == "token" else 0)
    per_example = tokens * (8 * arch["hidden_size"] + 2 * arch["mlp_dim"]) \
        + arch["num_heads"] * tokens * tokens
    return arch["num_layers"] * batch * per_example * bytes_per_value, tokens


def device_memory() -> tuple[int, str] | None:
    """(bytes, description) of the memory of the device that trains, or None if unknown."""
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax  # noqa: PLC0415

            device = jax.devices()[0]
            if device.platform != "cpu":
                limit = (device.memory_stats() or {}).get("bytes_limit")
                return (int(limit), f"{device.device_kind}") if limit else None
        elif backend == "torch":
            import torch  # noqa: PLC0415

            if torch.cuda.is_available():
                props = torch.cuda.get_device_properties(0)
                return int(props.total_memory), props.name
        else:
            import tensorflow as tf  # noqa: PLC0415

            if tf.config.list_physical_devices("GPU"):
                return None  # TensorFlow reports no capacity before allocating
    except Exception:  # an accelerator runtime that cannot say
        return None
    return _host_memory(), "machine"


def _host_memory() -> int:
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:  # a container's limit, when lower
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def check_training_fits(arch: dict, image_size: tuple[int, int], global_batch: int,
                        bytes_per_value: int, replicas: int = 1,
                        memory: tuple[int, str] | None = None) -> None:
    """Raises `UsageError` when the activations' lower bound exceeds the device's memory.

    Args:
        arch, image_size, bytes_per_value: as for `activation_bytes`.
        global_batch: --batch-size, split over `replicas` devices.
        replicas: Devices the batch is split over.
        memory: (bytes, description); default: `device_memory()`. Nothing is checked when
            the memory is unknown.
    """
    memory = memory if memory is not None else device_memory()
    if memory is None:
        return
    have, where = memory
    batch = max(1, global_batch // replicas)
    need, tokens = activation_bytes(arch, image_size, batch, bytes_per_value)
    if need <= have:
        return
    per_example = need // batch
    fits = have // per_example
    advice = (f"use --batch-size {replicas << (fits.bit_length() - 1)} or less, or a smaller "
              "--image-size" if fits else "use a smaller --image-size")
    raise UsageError(
        f"Training at {image_size[0]}x{image_size[1]} px ({tokens:,} tokens) with {batch} "
        f"example(s) per device keeps at least {need / GIB:,.1f} GiB of activations "
        f"(tokens x batch x width x {arch['num_layers']} layers, and attention's tokens^2), "
        f"more than this {where}'s {have / GIB:,.1f} GiB; {advice}."
    )
