"""Checkpoint key -> shape for an architecture, computed from its config without building it.

Used to check registry entries cheaply (ViT-H/14 would take GBs to instantiate) and to make
correctly shaped stand-in files in tests. `official_shapes` must agree with
`keras_vit.checkpoint.official_variables(model)` of the built model (tested for small variants).
"""

import math

from keras_vit.checkpoint import POS_EMBED_KEY
from keras_vit.layers.utils import to_pair


def stem_output_size(image_size, resnet_num_layers):
    """Spatial size after the hybrid's ResNet (SAME padding: ceil at each stride 2)."""
    h, w = to_pair(image_size, "image_size")
    if resnet_num_layers is None:
        return h, w
    strides = 2 + len([s for s in range(1, len(resnet_num_layers) + 1) if s > 1])
    for _ in range(strides):
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return h, w


def official_shapes(patch_size, hidden_size, num_layers, num_heads, mlp_dim, image_size=224,
                    classes=1000, representation_size=None, resnet_num_layers=None,
                    resnet_width_factor=1, classifier="token", channels=3, include_top=True,
                    num_register_tokens=0, layer_scale_init_value=None, no_embed_class=False,
                    class_token=None, fc_norm=False, position_embedding="learned_1d",
                    pooling=None, **_ignored):
    """{official key: shape} of a ViT checkpoint with this architecture and input size.

    Takes `keras_vit.ViT`'s architecture arguments, the later ViTs' options included
    (`num_register_tokens`, `layer_scale_init_value`, `no_embed_class`, `class_token`,
    `fc_norm`, `classifier="map"` with `include_top` or `pooling="map"`); other `ViT`
    arguments (`gelu_approximate`, ...) are accepted and change no shape.
    """
    ph, pw = to_pair(patch_size, "patch_size")
    d, h = hidden_size, num_heads
    shapes = {}
    in_channels = channels
    if resnet_num_layers is not None:
        width = int(64 * resnet_width_factor)
        shapes["conv_root/kernel"] = (7, 7, channels, width)
        shapes["gn_root/scale"] = shapes["gn_root/bias"] = (1, 1, 1, width)
        in_channels = width
        for s, units in enumerate(resnet_num_layers, start=1):
            f = width * 2 ** (s - 1)
            for u in range(1, units + 1):
                p = f"block{s}/unit{u}/"
                if in_channels != 4 * f or (s > 1 and u == 1):
                    shapes[p + "conv_proj/kernel"] = (1, 1, in_channels, 4 * f)
                    shapes[p + "gn_proj/scale"] = shapes[p + "gn_proj/bias"] = (1, 1, 1, 4 * f)
                shapes[p + "conv1/kernel"] = (1, 1, in_channels, f)
                shapes[p + "conv2/kernel"] = (3, 3, f, f)
                shapes[p + "conv3/kernel"] = (1, 1, f, 4 * f)
                for i, c in ((1, f), (2, f), (3, 4 * f)):
                    shapes[f"{p}gn{i}/scale"] = shapes[f"{p}gn{i}/bias"] = (1, 1, 1, c)
                in_channels = 4 * f
    fh, fw = stem_output_size(image_size, resnet_num_layers)
    class_token = classifier == "token" if class_token is None else class_token
    tokens = (fh // ph) * (fw // pw) + (class_token and not no_embed_class)
    shapes["embedding/kernel"] = (ph, pw, in_channels, d)
    shapes["embedding/bias"] = (d,)
    if class_token:
        shapes["cls"] = (1, 1, d)
    if position_embedding in ("learned_1d", "sincos_2d"):
        shapes[POS_EMBED_KEY] = (1, tokens, d)
    if num_register_tokens:
        shapes["registers"] = (1, num_register_tokens, d)
    for i in range(num_layers):
        p = f"Transformer/encoderblock_{i}/"
        mha = p + "MultiHeadDotProductAttention_1/"
        for ln in ("LayerNorm_0", "LayerNorm_2"):
            shapes[f"{p}{ln}/scale"] = shapes[f"{p}{ln}/bias"] = (d,)
        for name in ("query", "key", "value"):
            shapes[f"{mha}{name}/kernel"] = (d, h, d // h)
            shapes[f"{mha}{name}/bias"] = (h, d // h)
        shapes[mha + "out/kernel"] = (h, d // h, d)
        shapes[mha + "out/bias"] = (d,)
        shapes[p + "MlpBlock_3/Dense_0/kernel"] = (d, mlp_dim)
        shapes[p + "MlpBlock_3/Dense_0/bias"] = (mlp_dim,)
        shapes[p + "MlpBlock_3/Dense_1/kernel"] = (mlp_dim, d)
        shapes[p + "MlpBlock_3/Dense_1/bias"] = (d,)
        if layer_scale_init_value is not None:
            shapes[p + "LayerScale_1/scale"] = shapes[p + "LayerScale_3/scale"] = (d,)
    if fc_norm:
        if include_top or pooling is not None:
            shapes["fc_norm/scale"] = shapes["fc_norm/bias"] = (d,)
    else:
        shapes["Transformer/encoder_norm/scale"] = shapes["Transformer/encoder_norm/bias"] = (d,)
    if classifier == "map" and (include_top or pooling == "map"):
        head = "MAPHead_0/"
        shapes[head + "probe"] = (1, 1, d)
        for name in ("query", "key", "value"):
            shapes[f"{head}MultiHeadDotProductAttention_0/{name}/kernel"] = (d, h, d // h)
            shapes[f"{head}MultiHeadDotProductAttention_0/{name}/bias"] = (h, d // h)
        shapes[head + "MultiHeadDotProductAttention_0/out/kernel"] = (h, d // h, d)
        shapes[head + "MultiHeadDotProductAttention_0/out/bias"] = (d,)
        shapes[head + "LayerNorm_0/scale"] = shapes[head + "LayerNorm_0/bias"] = (d,)
        shapes[head + "MlpBlock_0/Dense_0/kernel"] = (d, mlp_dim)
        shapes[head + "MlpBlock_0/Dense_0/bias"] = (mlp_dim,)
        shapes[head + "MlpBlock_0/Dense_1/kernel"] = (mlp_dim, d)
        shapes[head + "MlpBlock_0/Dense_1/bias"] = (d,)
    if include_top:
        width = d
        if representation_size:
            shapes["pre_logits/kernel"] = (d, representation_size)
            shapes["pre_logits/bias"] = (representation_size,)
            width = representation_size
        shapes["head/kernel"] = (width, classes)
        shapes["head/bias"] = (classes,)
    return shapes


def entry_shapes(entry):
    """The shapes a registry entry's file must have (resolution 224 where unpublished)."""
    from keras_vit.architectures import FAMILY_VARIANTS, VARIANTS  # noqa: PLC0415

    arch = {**VARIANTS, **FAMILY_VARIANTS}[entry.variant]
    if entry.variant in FAMILY_VARIANTS:  # the published files: backbones, or with a head
        return official_shapes(image_size=entry.resolution, classes=entry.num_classes,
                               include_top=entry.num_classes is not None,
                               pooling="map" if arch.get("classifier") == "map" else None,
                               **arch)
    return official_shapes(
        image_size=entry.resolution or 224,
        classes=entry.num_classes,
        representation_size=arch["hidden_size"] if entry.has_pre_logits else None,
        **arch,
    )
