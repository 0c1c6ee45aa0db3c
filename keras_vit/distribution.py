"""Sharding a ViT with `keras.distribution` (JAX backend): data and model parallelism.

`layout_map(model_or_arch, mesh)` returns a `keras.distribution.LayoutMap` that
shards every encoder block Megatron-style along the mesh's "model" axis:

    query/key/value kernels (D, H, D/H)   heads split     (None, "model", None)
    query/key/value biases  (H, D/H)      heads split     ("model", None)
    out kernel              (H, D/H, D)   heads split     ("model", None, None)
    MLP Dense_0 kernel      (D, M)        columns split   (None, "model")
    MLP Dense_0 bias        (M,)                          ("model",)
    MLP Dense_1 kernel      (M, D)        rows split      ("model", None)
    relative embedding      (2T-1, H, D/H)                (None, "model", None)

so each device holds 1/m of the heads and of the MLP's hidden units, and XLA
inserts one reduction after the attention output and one after the MLP per
block. With ``shard_embedding=True`` the patch embedding (its kernel, bias,
class token and position embedding) is split along the hidden size D as well.
Everything else (LayerNorms, output biases, the head) is replicated. The
optimizer's slots follow their variables' layouts.

    import keras, keras_vit
    mesh = keras_vit.distribution.device_mesh((2, 2))        # 2-way data x 2-way model
    dist = keras.distribution.ModelParallel(
        layout_map=keras_vit.layout_map(arch, mesh), batch_dim_name="batch")
    with dist.scope():
        model = keras_vit.ViT(**arch); model.compile(...)
    model.fit(dataset)                                        # global batches

`model_parallel(...)` and `data_parallel(...)` build these distributions in one
call. The layouts need `num_heads` and `mlp_dim` (and D with
``shard_embedding``) divisible by the "model" axis size.
"""

from __future__ import annotations

import re
from typing import Mapping, Sequence

import keras

BATCH_AXIS = "batch"
MODEL_AXIS = "model"

# Suffixes of variable paths inside a TransformerBlock (official layer names)
# -> (layout, which dimension must divide by the model axis).
_BLOCK_LAYOUTS = {
    r"MultiHeadDotProductAttention_\d+/(query|key|value)_kernel": ((None, MODEL_AXIS, None), "heads"),
    r"MultiHeadDotProductAttention_\d+/(query|key|value)_bias": ((MODEL_AXIS, None), "heads"),
    r"MultiHeadDotProductAttention_\d+/out_kernel": ((MODEL_AXIS, None, None), "heads"),
    r"MultiHeadDotProductAttention_\d+/relative_embedding": ((None, MODEL_AXIS, None), "heads"),
    r"MlpBlock_\d+/Dense_0/kernel": ((None, MODEL_AXIS), "mlp"),
    r"MlpBlock_\d+/Dense_0/bias": ((MODEL_AXIS,), "mlp"),
    r"MlpBlock_\d+/Dense_1/kernel": ((MODEL_AXIS, None), "mlp"),
}
_EMBEDDING_LAYOUTS = {
    r"kernel": (None, None, None, MODEL_AXIS),
    r"bias": (MODEL_AXIS,),
    r"cls": (None, None, MODEL_AXIS),
    r"pos_embedding": (None, None, MODEL_AXIS),
    r"pos_embedding_(row|col)": (None, MODEL_AXIS),
}


def device_mesh(shape: Sequence[int] | None = None, devices=None,
                axis_names: Sequence[str] = (BATCH_AXIS, MODEL_AXIS)) -> keras.distribution.DeviceMesh:
    """A ("batch", "model") `DeviceMesh` over all (or the given) devices.

    Args:
        shape: (data-parallel size, model-parallel size); default: all devices
            on the batch axis, (n, 1). One entry may be -1 (inferred).
        devices: Device names or objects; default `keras.distribution.list_devices()`
            (every device of every process after `keras.distribution.initialize`).
        axis_names: Names of the two axes.
    """
    devices = list(devices) if devices is not None else keras.distribution.list_devices()
    n = len(devices)
    shape = list(shape) if shape is not None else [n, 1]
    if len(shape) != len(axis_names):
        raise ValueError(f"Mesh shape {tuple(shape)} does not match the axes {tuple(axis_names)}.")
    if shape.count(-1) > 1:
        raise ValueError(f"At most one mesh dimension may be -1, got {tuple(shape)}.")
    if -1 in shape:
        known = 1
        for s in shape:
            known *= s if s != -1 else 1
        shape[shape.index(-1)] = n // known if known and n % known == 0 else 0
    size = 1
    for s in shape:
        size *= s
    if size != n or min(shape) < 1:
        raise ValueError(f"Mesh shape {tuple(shape)} needs {size} devices; there are {n}: {devices}.")
    return keras.distribution.DeviceMesh(shape=tuple(shape), axis_names=tuple(axis_names),
                                         devices=devices)


def layout_map(model_or_arch, mesh: keras.distribution.DeviceMesh, *,
               shard_embedding: bool = False,
               model_axis: str = MODEL_AXIS) -> keras.distribution.LayoutMap:
    """The `LayoutMap` that shards a ViT's attention and MLP kernels along `model_axis`.

    Args:
        model_or_arch: A built ViT (`keras.Model`), or its architecture kwargs
            (``dict(num_heads=..., mlp_dim=..., hidden_size=...)`` as given to
            `keras_vit.ViT`), which is what one has before creating the model
            inside the distribution's scope.
        mesh: The `keras.distribution.DeviceMesh`; must have an axis `model_axis`.
        shard_embedding: Also split the patch embedding (kernel, bias, class
            token, position embedding) along the hidden size.
        model_axis: Name of the mesh axis to shard along.

    Returns:
        A `LayoutMap` whose keys are regular expressions matched (in full)
        against variable paths such as
        ``encoderblock_0/MultiHeadDotProductAttention_1/query_kernel``.

    Raises:
        ValueError: When the mesh has no `model_axis`, or the heads / MLP width
            (/ hidden size) are not divisible by its size, or (for a model) when
            no variable matches.
    """
    if model_axis not in mesh.axis_names:
        raise ValueError(f"The mesh's axes {tuple(mesh.axis_names)} have no {model_axis!r} axis.")
    size = mesh.shape[list(mesh.axis_names).index(model_axis)]
    dims = _dims(model_or_arch)
    checks = [("heads", "num_heads")] + [("mlp", "mlp_dim")]
    if shard_embedding:
        checks.append(("hidden", "hidden_size"))
    for key, name in checks:
        for value in dims[key]:
            if value % size:
                raise ValueError(
                    f"{name}={value} is not divisible by the {size}-way {model_axis!r} mesh axis; "
                    f"choose a mesh whose {model_axis!r} size divides it."
                )

    def axes(layout):
        return tuple(model_axis if a == MODEL_AXIS else a for a in layout)

    result = keras.distribution.LayoutMap(mesh)
    for suffix, (layout, _) in _BLOCK_LAYOUTS.items():
        result[rf"(.*/)?{suffix}"] = axes(layout)
    if shard_embedding:
        for name, layout in _EMBEDDING_LAYOUTS.items():
            result[rf"(.*/)?embedding/{name}"] = axes(layout)

    if isinstance(model_or_arch, keras.Model):
        matched = [v.path for v in model_or_arch.weights if result[v.path] is not None]
        if not matched:
            raise ValueError(
                f"No variable of model {model_or_arch.name!r} matches the ViT layouts; "
                "is it a keras_vit ViT?"
            )
    return result


def sharded_paths(model: keras.Model, lmap: keras.distribution.LayoutMap) -> dict[str, tuple]:
    """{variable path: layout axes} for the variables of `model` that `lmap` shards."""
    out = {}
    for v in model.weights:
        layout = lmap[v.path]
        if layout is not None and any(a is not None for a in layout.axes):
            out[v.path] = tuple(layout.axes)
    return out


def data_parallel(devices=None, auto_shard_dataset: bool = True) -> keras.distribution.DataParallel:
    """`keras.distribution.DataParallel` over all (or the given) devices.

    Args:
        devices: Default: every device of every process.
        auto_shard_dataset: False when each process already feeds its own shard
            of the data (`tf_data.build_dataset(process_index=, process_count=)`).
    """
    devices = list(devices) if devices is not None else keras.distribution.list_devices()
    return keras.distribution.DataParallel(devices=devices, auto_shard_dataset=auto_shard_dataset)


def model_parallel(model_or_arch, mesh_shape: Sequence[int] | None = None, devices=None, *,
                   shard_embedding: bool = False,
                   auto_shard_dataset: bool = True) -> keras.distribution.ModelParallel:
    """`keras.distribution.ModelParallel` for a ViT on a ("batch", "model") mesh.

    Args:
        model_or_arch: The ViT or its architecture kwargs (see `layout_map`).
        mesh_shape: (data-parallel size, model-parallel size); default (1, n).
        devices: Default: every device of every process.
        shard_embedding: Also shard the patch embedding.
        auto_shard_dataset: As for `data_parallel`.
    """
    devices = list(devices) if devices is not None else keras.distribution.list_devices()
    mesh = device_mesh(mesh_shape or (1, len(devices)), devices)
    return keras.distribution.ModelParallel(
        layout_map=layout_map(model_or_arch, mesh, shard_embedding=shard_embedding),
        batch_dim_name=BATCH_AXIS,
        auto_shard_dataset=auto_shard_dataset,
    )


def _dims(model_or_arch) -> dict[str, list[int]]:
    """Head counts, MLP widths and hidden sizes of a ViT or an arch dict."""
    if isinstance(model_or_arch, keras.Model):
        from keras_vit.layers import TransformerBlock

        blocks = [l for l in model_or_arch._flatten_layers() if isinstance(l, TransformerBlock)]
        if not blocks:
            raise ValueError(f"Model {model_or_arch.name!r} has no TransformerBlock.")
        hidden = sorted({v.shape[-1] for v in model_or_arch.weights
                         if re.fullmatch(r"(.*/)?embedding/bias", v.path)})
        return {"heads": sorted({b.num_heads for b in blocks}),
                "mlp": sorted({b.mlp_dim for b in blocks}),
                "hidden": hidden}
    if isinstance(model_or_arch, Mapping):
        missing = [k for k in ("num_heads", "mlp_dim") if k not in model_or_arch]
        if missing:
            raise ValueError(f"The architecture lacks {', '.join(missing)}: {dict(model_or_arch)}.")
        hidden = [model_or_arch["hidden_size"]] if "hidden_size" in model_or_arch else []
        return {"heads": [model_or_arch["num_heads"]], "mlp": [model_or_arch["mlp_dim"]],
                "hidden": hidden}
    raise TypeError(f"Expected a keras.Model or an architecture dict, got {type(model_or_arch)}.")
