"""An independent float64 NumPy ViT, written from the paper's equations and the official
checkpoint arrays (keys as in the published `.npz` files), plus a maker of such files.

Nothing here imports keras_vit: it is the reference the library is tested against.
"""

import math

import numpy as np
import scipy.ndimage
from scipy.special import erf


# ----------------------------------------------------------------------------- file maker


def make_official_params(
    rng,
    image_size=32,
    patch=8,
    channels=3,
    hidden=32,
    layers=2,
    heads=4,
    mlp=64,
    classes=10,
    classifier="token",
    representation_size=None,
    resnet=None,
    resnet_width=32,
):
    """Random arrays with the exact names, shapes and dtypes of the published checkpoints.

    Values are drawn with realistic scales (and non-zero heads) so that logits are informative.
    `resnet` is a tuple of units per stage for a hybrid; GroupNorm params use the published
    (1, 1, 1, C) shape.
    """

    def normal(*shape, scale=None):
        if scale is None:
            scale = 1.0 / math.sqrt(shape[0] if len(shape) > 1 else 1.0)
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    def norm_params(prefix, c, gn=False):
        shape = (1, 1, 1, c) if gn else (c,)
        return {
            f"{prefix}/scale": (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32),
            f"{prefix}/bias": (0.1 * rng.standard_normal(shape)).astype(np.float32),
        }

    p = {}
    in_channels, feature = channels, image_size
    if resnet is not None:
        width = resnet_width
        p["conv_root/kernel"] = normal(7, 7, channels, width, scale=0.1)
        p.update(norm_params("gn_root", width, gn=True))
        in_channels, feature = width, math.ceil(math.ceil(image_size / 2) / 2)
        for s, units in enumerate(resnet, start=1):
            f = width * 2 ** (s - 1)
            for u in range(1, units + 1):
                prefix = f"block{s}/unit{u}"
                stride = 2 if (s > 1 and u == 1) else 1
                if in_channels != 4 * f or stride != 1:
                    p[f"{prefix}/conv_proj/kernel"] = normal(1, 1, in_channels, 4 * f, scale=0.1)
                    p.update(norm_params(f"{prefix}/gn_proj", 4 * f, gn=True))
                p[f"{prefix}/conv1/kernel"] = normal(1, 1, in_channels, f, scale=0.1)
                p[f"{prefix}/conv2/kernel"] = normal(3, 3, f, f, scale=0.1)
                p[f"{prefix}/conv3/kernel"] = normal(1, 1, f, 4 * f, scale=0.1)
                for i, c in ((1, f), (2, f), (3, 4 * f)):
                    p.update(norm_params(f"{prefix}/gn{i}", c, gn=True))
                in_channels = 4 * f
                feature = math.ceil(feature / stride)
    grid = feature // patch
    tokens = grid * grid + (classifier == "token")
    d, dh = hidden, hidden // heads
    p["embedding/kernel"] = normal(patch, patch, in_channels, d, scale=1 / math.sqrt(patch * patch * in_channels))
    p["embedding/bias"] = normal(d, scale=0.02)
    if classifier == "token":
        p["cls"] = normal(1, 1, d, scale=0.1)
    p["Transformer/posembed_input/pos_embedding"] = normal(1, tokens, d, scale=0.1)
    for i in range(layers):
        b = f"Transformer/encoderblock_{i}"
        p.update(norm_params(f"{b}/LayerNorm_0", d))
        p.update(norm_params(f"{b}/LayerNorm_2", d))
        a = f"{b}/MultiHeadDotProductAttention_1"
        for name in ("query", "key", "value"):
            p[f"{a}/{name}/kernel"] = normal(d, heads, dh, scale=1 / math.sqrt(d))
            p[f"{a}/{name}/bias"] = normal(heads, dh, scale=0.02)
        p[f"{a}/out/kernel"] = normal(heads, dh, d, scale=1 / math.sqrt(d))
        p[f"{a}/out/bias"] = normal(d, scale=0.02)
        p[f"{b}/MlpBlock_3/Dense_0/kernel"] = normal(d, mlp)
        p[f"{b}/MlpBlock_3/Dense_0/bias"] = normal(mlp, scale=0.02)
        p[f"{b}/MlpBlock_3/Dense_1/kernel"] = normal(mlp, d)
        p[f"{b}/MlpBlock_3/Dense_1/bias"] = normal(d, scale=0.02)
    p.update(norm_params("Transformer/encoder_norm", d))
    head_in = d
    if representation_size:
        p["pre_logits/kernel"] = normal(d, representation_size)
        p["pre_logits/bias"] = normal(representation_size, scale=0.02)
        head_in = representation_size
    p["head/kernel"] = normal(head_in, classes)
    p["head/bias"] = normal(classes, scale=0.1)
    return p


# ----------------------------------------------------------------------------- forward pass


def layer_norm(x, scale, bias, eps=1e-6):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * scale + bias


def gelu(x, approximate=True):
    if approximate:  # flax.linen.gelu default
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + erf(x / np.sqrt(2)))


def conv2d_same(x, kernel, stride):
    """TF/XLA 'SAME' convolution (extra padding at the bottom/right), NHWC x HWIO."""
    b, h, w, c = x.shape
    kh, kw, _, out = kernel.shape
    oh, ow = math.ceil(h / stride), math.ceil(w / stride)
    ph = max((oh - 1) * stride + kh - h, 0)
    pw = max((ow - 1) * stride + kw - w, 0)
    x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    y = np.zeros((b, oh, ow, out))
    for i in range(kh):
        for j in range(kw):
            window = x[:, i : i + stride * oh : stride, j : j + stride * ow : stride, :]
            y += window @ kernel[i, j]
    return y


def max_pool_same(x, size=3, stride=2):
    b, h, w, c = x.shape
    oh, ow = math.ceil(h / stride), math.ceil(w / stride)
    ph = max((oh - 1) * stride + size - h, 0)
    pw = max((ow - 1) * stride + size - w, 0)
    x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)),
               constant_values=-np.inf)
    y = np.full((b, oh, ow, c), -np.inf)
    for i in range(size):
        for j in range(size):
            y = np.maximum(y, x[:, i : i + stride * oh : stride, j : j + stride * ow : stride, :])
    return y


def std_conv(x, kernel, stride):
    kernel = kernel.astype(np.float64)
    mean = kernel.mean(axis=(0, 1, 2), keepdims=True)
    std = kernel.std(axis=(0, 1, 2), keepdims=True)
    return conv2d_same(x, (kernel - mean) / (std + 1e-5), stride)


def group_norm(x, scale, bias, groups=32, eps=1e-6):
    b, h, w, c = x.shape
    g = x.reshape(b, h, w, groups, c // groups)
    mean = g.mean(axis=(1, 2, 4), keepdims=True)
    var = g.var(axis=(1, 2, 4), keepdims=True)
    g = (g - mean) / np.sqrt(var + eps)
    return g.reshape(b, h, w, c) * scale.reshape(c) + bias.reshape(c)


def resnet_forward(p, x, num_layers):
    relu = lambda t: np.maximum(t, 0)
    x = relu(group_norm(std_conv(x, p["conv_root/kernel"], 2), p["gn_root/scale"], p["gn_root/bias"]))
    x = max_pool_same(x)
    for s, units in enumerate(num_layers, start=1):
        for u in range(1, units + 1):
            q = f"block{s}/unit{u}/"
            stride = 2 if (s > 1 and u == 1) else 1
            residual = x
            if q + "conv_proj/kernel" in p:
                residual = group_norm(std_conv(x, p[q + "conv_proj/kernel"], stride),
                                      p[q + "gn_proj/scale"], p[q + "gn_proj/bias"])
            y = relu(group_norm(std_conv(x, p[q + "conv1/kernel"], 1), p[q + "gn1/scale"], p[q + "gn1/bias"]))
            y = relu(group_norm(std_conv(y, p[q + "conv2/kernel"], stride), p[q + "gn2/scale"], p[q + "gn2/bias"]))
            y = group_norm(std_conv(y, p[q + "conv3/kernel"], 1), p[q + "gn3/scale"], p[q + "gn3/bias"])
            x = relu(residual + y)
    return x


def resample_posemb(posemb, grid, num_prefix):
    """The official `vit_jax/checkpoint.py` algorithm: scipy zoom, order 1."""
    tok, old = posemb[:, :num_prefix], posemb[0, num_prefix:]
    side = int(np.sqrt(len(old)))
    old = old.reshape(side, side, -1)
    new = scipy.ndimage.zoom(old, (grid[0] / side, grid[1] / side, 1), order=1)
    return np.concatenate([tok, new.reshape(1, grid[0] * grid[1], -1)], axis=1)


def vit_forward(p, images, classifier="token", resnet=None, gelu_approximate=True,
                preprocess=True):
    """Logits of the official ViT for `images` (B, H, W, C) in [0, 255], in float64."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    x = np.asarray(images, np.float64)
    if preprocess:
        x = x / 127.5 - 1.0
    if resnet is not None:
        x = resnet_forward(p, x, resnet)
    # Eq. 1: patch embedding as the official stride-P VALID convolution.
    kernel = p["embedding/kernel"]
    patch = kernel.shape[0]
    b, h, w, _ = x.shape
    gh, gw = h // patch, w // patch
    x = np.stack(
        [
            np.einsum("bijc,ijcd->bd", x[:, r * patch : (r + 1) * patch, c * patch : (c + 1) * patch], kernel)
            for r in range(gh)
            for c in range(gw)
        ],
        axis=1,
    ) + p["embedding/bias"]
    if classifier == "token":
        x = np.concatenate([np.broadcast_to(p["cls"], (b, 1, x.shape[-1])), x], axis=1)
    posemb = p["Transformer/posembed_input/pos_embedding"]
    if posemb.shape[1] != x.shape[1]:
        posemb = resample_posemb(posemb, (gh, gw), int(classifier == "token"))
    x = x + posemb
    i = 0
    while f"Transformer/encoderblock_{i}/LayerNorm_0/scale" in p:
        q = f"Transformer/encoderblock_{i}/"
        a = q + "MultiHeadDotProductAttention_1/"
        # Eq. 2
        y = layer_norm(x, p[q + "LayerNorm_0/scale"], p[q + "LayerNorm_0/bias"])
        query = np.einsum("btd,dhk->bthk", y, p[a + "query/kernel"]) + p[a + "query/bias"]
        key = np.einsum("btd,dhk->bthk", y, p[a + "key/kernel"]) + p[a + "key/bias"]
        value = np.einsum("btd,dhk->bthk", y, p[a + "value/kernel"]) + p[a + "value/bias"]
        logits = np.einsum("bqhk,bthk->bhqt", query, key) / np.sqrt(query.shape[-1])
        logits -= logits.max(-1, keepdims=True)
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        y = np.einsum("bhqt,bthk->bqhk", probs, value)
        x = x + np.einsum("bqhk,hkd->bqd", y, p[a + "out/kernel"]) + p[a + "out/bias"]
        # Eq. 3
        m = q + "MlpBlock_3/"
        y = layer_norm(x, p[q + "LayerNorm_2/scale"], p[q + "LayerNorm_2/bias"])
        y = gelu(y @ p[m + "Dense_0/kernel"] + p[m + "Dense_0/bias"], gelu_approximate)
        x = x + y @ p[m + "Dense_1/kernel"] + p[m + "Dense_1/bias"]
        i += 1
    # Eq. 4
    x = layer_norm(x, p["Transformer/encoder_norm/scale"], p["Transformer/encoder_norm/bias"])
    x = x[:, 0] if classifier == "token" else x.mean(axis=1)
    if "pre_logits/kernel" in p:
        x = np.tanh(x @ p["pre_logits/kernel"] + p["pre_logits/bias"])
    return x @ p["head/kernel"] + p["head/bias"]


def relative_error(actual, expected):
    """max |a - e| / max |e|: one scale for the whole logit vector."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.max(np.abs(actual - expected)) / np.max(np.abs(expected)))


# ----------------------------------------------------------------------------- DeiT-III


def make_deit3_state(rng, image_size=32, patch=8, channels=3, hidden=32, layers=2, heads=4,
                     mlp=64, classes=10):
    """Random arrays named and shaped as the published DeiT-III checkpoints
    (`dl.fbaipublicfiles.com/deit/deit_3_*.pth`, facebookresearch/deit `models_v2.py`:
    `vit_models` with `Layer_scale_init_Block`): torch layouts (Linear (out, in), Conv2d
    OIHW), a fused `qkv`, LayerScale `gamma_1`/`gamma_2`, and `pos_embed` over the patches
    only (the class token is concatenated after it is added)."""
    d, n = hidden, (image_size // patch) ** 2

    def normal(*shape, scale):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    s = {"cls_token": normal(1, 1, d, scale=0.3), "pos_embed": normal(1, n, d, scale=0.3),
         "patch_embed.proj.weight": normal(d, channels, patch, patch,
                                           scale=1 / math.sqrt(patch * patch * channels)),
         "patch_embed.proj.bias": normal(d, scale=0.1),
         "norm.weight": 1 + normal(d, scale=0.1), "norm.bias": normal(d, scale=0.1),
         "head.weight": normal(classes, d, scale=0.5), "head.bias": normal(classes, scale=0.1)}
    for i in range(layers):
        b = f"blocks.{i}."
        for norm in ("norm1", "norm2"):
            s[b + norm + ".weight"] = 1 + normal(d, scale=0.1)
            s[b + norm + ".bias"] = normal(d, scale=0.1)
        s[b + "attn.qkv.weight"] = normal(3 * d, d, scale=d ** -0.5)
        s[b + "attn.qkv.bias"] = normal(3 * d, scale=0.1)
        s[b + "attn.proj.weight"] = normal(d, d, scale=d ** -0.5)
        s[b + "attn.proj.bias"] = normal(d, scale=0.1)
        s[b + "mlp.fc1.weight"] = normal(mlp, d, scale=d ** -0.5)
        s[b + "mlp.fc1.bias"] = normal(mlp, scale=0.1)
        s[b + "mlp.fc2.weight"] = normal(d, mlp, scale=mlp ** -0.5)
        s[b + "mlp.fc2.bias"] = normal(d, scale=0.1)
        # Trained LayerScale values are far from their 1e-6 start; informative ones here.
        s[b + "gamma_1"] = normal(d, scale=0.5)
        s[b + "gamma_2"] = normal(d, scale=0.5)
    return s


def deit3_forward(state, images, heads=4):
    """DeiT-III (Touvron et al., ECCV 2022) in float64 on NHWC `images` (already normalised),
    from the published arrays: returns (logits, the final-norm tokens).

        x_0 = [x_class; x_p E + E_pos]                 (position embedding on patches only)
        x' = x + gamma_1 * MSA(LN(x)),  x'' = x' + gamma_2 * MLP(LN(x'))   (LayerScale, CaiT)
        y = head(LN(x_L)[class token])
    with exact GELU and LayerNorm epsilon 1e-6, as `models_v2.py`.
    """
    s = {k: np.asarray(v, np.float64) for k, v in state.items()}
    x = np.asarray(images, np.float64)
    kernel = s["patch_embed.proj.weight"].transpose(2, 3, 1, 0)  # OIHW -> HWIO
    p = kernel.shape[0]
    b, h, w, c = x.shape
    patches = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    x = patches.reshape(b, -1, p * p * c) @ kernel.reshape(p * p * c, -1) + s["patch_embed.proj.bias"]
    x = x + s["pos_embed"]
    d = x.shape[-1]
    x = np.concatenate([np.broadcast_to(s["cls_token"], (b, 1, d)), x], axis=1)
    t = x.shape[1]
    ln = lambda z, name: layer_norm(z, s[name + ".weight"], s[name + ".bias"], eps=1e-6)  # noqa: E731
    i = 0
    while f"blocks.{i}.norm1.weight" in s:
        q = f"blocks.{i}."
        qkv = (ln(x, q + "norm1") @ s[q + "attn.qkv.weight"].T + s[q + "attn.qkv.bias"])
        query, key, value = qkv.reshape(b, t, 3, heads, d // heads).transpose(2, 0, 3, 1, 4)
        logits = query @ key.transpose(0, 1, 3, 2) / np.sqrt(d // heads)
        logits -= logits.max(-1, keepdims=True)
        probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
        y = (probs @ value).transpose(0, 2, 1, 3).reshape(b, t, d)
        x = x + s[q + "gamma_1"] * (y @ s[q + "attn.proj.weight"].T + s[q + "attn.proj.bias"])
        y = gelu(ln(x, q + "norm2") @ s[q + "mlp.fc1.weight"].T + s[q + "mlp.fc1.bias"],
                 approximate=False)
        x = x + s[q + "gamma_2"] * (y @ s[q + "mlp.fc2.weight"].T + s[q + "mlp.fc2.bias"])
        i += 1
    tokens = ln(x, "norm")
    return tokens[:, 0] @ s["head.weight"].T + s["head.bias"], tokens
