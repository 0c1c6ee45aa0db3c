"""PI-resize (FlexiViT, Beyer et al. 2023, Eq. 3): a checkpoint at another patch size.

The defining property is checked with patches resized by the backend's own image resize
(`keras.ops.image.resize`, and torch's antialiased bicubic for the timm flavour), not with the
resize matrix the implementation inverts.
"""

import keras
import numpy as np
import pytest

import keras_vit
from conftest import once, require
from keras_vit.checkpoint import save_npz
from keras_vit.patch_resize import pi_resize_patch_embedding, resize_matrix

# Filled by the tests, printed at the end of the module (pytest -s) for the README figures.
FIGURES = {}


def _tokens(patches, kernel):
    """<x, w> for each patch: (N, p, p, C) x (p, p, C, D) -> (N, D), float64."""
    return np.einsum("nhwc,hwcd->nd", np.asarray(patches, np.float64),
                     np.asarray(kernel, np.float64))


def _backend_resize(patches, size, method="bilinear"):
    out = keras.ops.image.resize(keras.ops.convert_to_tensor(patches.astype("float32")),
                                 size, interpolation=method, antialias=False)
    return keras.ops.convert_to_numpy(out)


def _patchwise_resize(images, patch, new_patch):
    b, h, w, c = images.shape
    gh, gw = h // patch, w // patch
    x = images.reshape(b, gh, patch, gw, patch, c).transpose(0, 1, 3, 2, 4, 5)
    x = _backend_resize(x.reshape(-1, patch, patch, c), (new_patch, new_patch))
    x = x.reshape(b, gh, gw, new_patch, new_patch, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, gh * new_patch, gw * new_patch, c)


@pytest.mark.parametrize("old, new", [(16, 24), (8, 16), (2, 5), ((4, 6), (8, 9))])
def test_resized_patches_give_the_original_tokens(rng, old, new):
    """Upsampling: <resize(x), PI-resize(w)> = <x, w> for random patches x (exact)."""
    old_hw = old if isinstance(old, tuple) else (old, old)
    kernel = rng.standard_normal(old_hw + (3, 32)).astype("float32") / old_hw[0]
    patches = rng.uniform(-1, 1, (64,) + old_hw + (3,)).astype("float32")
    new_kernel = pi_resize_patch_embedding(kernel, new)
    new_hw = new if isinstance(new, tuple) else (new, new)
    assert new_kernel.shape == new_hw + (3, 32) and new_kernel.dtype == np.float32
    resized = _backend_resize(patches, new_hw)
    reference = _tokens(patches, kernel)
    error = np.abs(_tokens(resized, new_kernel) - reference).max()
    FIGURES[f"pi {old}->{new} max |token error|"] = float(error)
    assert error < 1e-4 * np.abs(reference).max()
    # The naive alternative (resizing the kernel itself) does not keep the tokens.
    naive = _backend_resize(np.moveaxis(kernel, (2, 3), (0, 1)).reshape((-1,) + old_hw + (1,)),
                            new_hw)[..., 0].reshape((3, 32) + new_hw)
    naive = np.moveaxis(naive, (0, 1), (2, 3)) * (np.prod(old_hw) / np.prod(new_hw))
    assert np.abs(_tokens(resized, naive) - reference).max() > 100 * error


def test_bicubic_flavour_matches_torch_antialiased_resize(rng):
    """`pi_bicubic` inverts timm's patch resize (torch bicubic, antialias=True)."""
    torch = require("torch")
    kernel = rng.standard_normal((4, 4, 3, 8))
    patches = rng.uniform(-1, 1, (32, 4, 4, 3))
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(patches).permute(0, 3, 1, 2), size=(7, 7), mode="bicubic",
        antialias=True, align_corners=False).permute(0, 2, 3, 1).numpy()
    new_kernel = pi_resize_patch_embedding(kernel, 7, method="bicubic")
    error = np.abs(_tokens(resized, new_kernel) - _tokens(patches, kernel)).max()
    FIGURES["pi_bicubic 4->7 max |token error|"] = float(error)
    assert error < 1e-10


def _backend_resize_matrix(old_hw, new_hw):
    """B as the backend's own `keras.ops.image.resize` (bilinear, antialias off) does it: its
    columns are the resizes of the basis patches."""
    basis = np.eye(old_hw[0] * old_hw[1], dtype="float32").reshape(-1, *old_hw, 1)
    return _backend_resize(basis, new_hw)[..., 0].reshape(len(basis), -1).T.astype(np.float64)


@pytest.mark.parametrize("old, new", [(16, 8), (8, 5), (16, 12), ((8, 6), (5, 4))])
def test_downsampling_matrix_is_the_backend_resize(rng, old, new):
    """The /16 -> /8 direction: the matrix PI-resize inverts is the backend's real bilinear
    downsampling (antialias off, as `tf.image.resize` in big_vision), on random patches."""
    old_hw = old if isinstance(old, tuple) else (old, old)
    new_hw = new if isinstance(new, tuple) else (new, new)
    patches = rng.uniform(-1, 1, (64,) + old_hw + (3,)).astype("float32")
    real = _backend_resize(patches, new_hw)
    B = resize_matrix(old, new)
    mine = np.einsum("nm,bmc->bnc", B, patches.reshape(64, -1, 3).astype(np.float64))
    error = np.abs(mine.reshape(real.shape) - real).max()
    FIGURES[f"resize matrix {old}->{new} vs backend resize"] = float(error)
    assert error < 1e-5


def test_downsampling_is_the_least_squares_optimum(rng):
    """p' < p: no exact solution; PI-resize minimises E_x[(<x,w> - <Bx,w'>)^2] (Eq. 3), so the
    residual is orthogonal to every direction B x of the resized patches, with B the backend's
    real downsampling (not the library's matrix)."""
    kernel = rng.standard_normal((8, 8, 1, 4))
    B = _backend_resize_matrix((8, 8), (5, 5))
    new_kernel = pi_resize_patch_embedding(kernel, 5)
    w, w_new = kernel.reshape(64, 4), new_kernel.reshape(25, 4)
    # Gradient of the Gaussian-patch loss sum_x (x.w - (Bx).w')^2 is -2 B (w - B^T w') = 0
    # (float32 resizes: zero to their rounding).
    assert np.abs(B @ (w - B.T @ w_new)).max() < 1e-5
    # E_x[(x.w - (Bx).w')^2] for x ~ N(0, I) is ||w - B^T w'||^2.
    loss = lambda cand: np.sum((w - B.T @ cand) ** 2)  # noqa: E731
    best = loss(w_new)
    for _ in range(5):  # any perturbation does worse
        assert loss(w_new + 0.01 * rng.standard_normal(w_new.shape)) > best


def test_checkpoint_loads_at_another_patch_size(rng, tmp_path):
    """A /4 checkpoint at 16 px into /8 at 32 px (the same 4x4 grid): every image upsampled 2x
    gives the checkpoint model's outputs; into /8 at 16 px (2x2 grid) it loads too, with the
    position embedding resampled."""
    small = dict(hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64, classes=5,
                 classifier_activation=None)
    source = keras_vit.ViT(image_size=16, patch_size=4, **small)
    for v in source.weights:  # a trained-looking checkpoint: nothing at zero
        v.assign(0.2 * rng.standard_normal(v.shape).astype("float32") + (v.name == "gamma"))
    path = save_npz(source, str(tmp_path / "vit4.npz"))

    with pytest.raises(ValueError, match="patch_embed_resample='pi'"):
        keras_vit.ViT(patch_size=8, weights=path, **small)
    with pytest.raises(ValueError, match="Unknown patch_embed_resample"):
        keras_vit.ViT(patch_size=8, weights=path, patch_embed_resample="nearest", **small)

    model = keras_vit.ViT(image_size=32, patch_size=8, weights=path, patch_embed_resample="pi",
                          **small)
    assert model.get_layer("embedding").kernel.shape == (8, 8, 3, 32)
    images = rng.uniform(0, 255, (4, 16, 16, 3)).astype("float32")
    # Each 4x4 patch resized to 8x8 by the backend's bilinear resize (a whole-image resize
    # would also mix pixels across patch borders, which FlexiViT's property leaves out).
    big = _patchwise_resize(images, 4, 8)
    expected = keras.ops.convert_to_numpy(source(images))
    got = keras.ops.convert_to_numpy(model(big))
    FIGURES["checkpoint /4@16px -> /8@32px max |logit error|"] = float(np.abs(got - expected).max())
    np.testing.assert_allclose(got, expected, atol=2e-4 * np.abs(expected).max())

    default = keras_vit.ViT(patch_size=8, weights=path, patch_embed_resample="pi", **small)
    assert default.input_shape[1:3] == (16, 16)  # the checkpoint's resolution, 2x2 tokens
    loaded = keras_vit.load_weights(
        keras_vit.ViT(image_size=32, patch_size=8, **small), path, patch_embed_resample="pi")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded(big)), got, atol=1e-5)


def _mirror_ti16_imagenet(bucket):
    """ViTTi16's "imagenet" file, random weights in the published layout, in a local mirror
    of the bucket (KERAS_VIT_WEIGHTS_URL); its registry entry and its arrays."""
    from numpy_vit import make_official_params

    entry = keras_vit.get_weights_entry("ViTTi16", "imagenet")
    params = make_official_params(np.random.default_rng(0), image_size=384, patch=16,
                                  hidden=192, layers=12, heads=3, mlp=768, classes=1000)
    (bucket / entry.path).parent.mkdir(parents=True)
    np.savez(bucket / entry.path, **params)
    return entry, params


def test_registry_weights_at_another_patch_size(rng, tmp_path, monkeypatch):
    """`ViTTi16(weights="imagenet", patch_size=32, patch_embed_resample="pi")`: the named
    weights (from a local mirror of the bucket) at /32, at their 384 px: each 16x16 patch
    upsampled to 32x32 gives the checkpoint's token."""
    entry, params = _mirror_ti16_imagenet(tmp_path / "bucket")
    monkeypatch.setenv("KERAS_VIT_WEIGHTS_URL", (tmp_path / "bucket").as_uri())
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    monkeypatch.setenv("KERAS_VIT_CACHE_DIR", "")

    with pytest.raises(ValueError, match="patch_embed_resample='pi'"):
        keras_vit.ViTTi16(weights="imagenet", patch_size=32)
    # A registry name wins over a same-named folder in the working directory, as at /16.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "imagenet").mkdir()
    model = keras_vit.ViTTi16(weights="imagenet", patch_size=32, patch_embed_resample="pi",
                              classifier_activation=None)
    assert model.input_shape[1:3] == (384, 384)  # the weights' resolution: 12x12 tokens
    kernel = keras.ops.convert_to_numpy(model.get_layer("embedding").kernel)
    assert kernel.shape == (32, 32, 3, 192)
    patches = rng.uniform(-1, 1, (64, 16, 16, 3)).astype("float32")
    reference = _tokens(patches, params["embedding/kernel"])
    error = np.abs(_tokens(_backend_resize(patches, (32, 32)), kernel) - reference).max()
    FIGURES["registry Ti/16 -> /32 max |token error|"] = float(error)
    assert error < 1e-4 * np.abs(reference).max()
    np.testing.assert_array_equal(  # the rest of the checkpoint as it was
        keras.ops.convert_to_numpy(model.get_layer("head").kernel), params["head/kernel"])

    # The same rules as by name at the variant's own patch size: a head of the wrong width is
    # refused before any download, and a cached file that does not read is deleted.
    with pytest.raises(ValueError, match="21843-class head"):
        keras_vit.ViTTi16(weights="imagenet21k", patch_size=32, patch_embed_resample="pi")
    with pytest.raises(ValueError, match="Unknown weights 'imagenet22k' for ViTTi16"):
        keras_vit.ViTTi16(weights="imagenet22k", patch_size=32, patch_embed_resample="pi")
    in21k = keras_vit.get_weights_entry("ViTTi16", "imagenet21k")
    assert not list((tmp_path / "keras_home").rglob(in21k.filename))
    cached = next((tmp_path / "keras_home").rglob(entry.filename))
    cached.write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="could not be read and was deleted"):
        keras_vit.ViTTi16(weights="imagenet", patch_size=32, patch_embed_resample="pi")
    assert not cached.exists()


@once  # the command's argument handling; the loading is the test above, on every backend
def test_convert_command_writes_weights_at_another_patch_size(tmp_path):
    """`keras-vit convert imagenet ti32.weights.h5 --model ViTTi16 --patch-size 32
    --patch-embed-resample pi` in a new process, then the printed rebuild line's model."""
    import os
    import subprocess
    import sys

    entry, params = _mirror_ti16_imagenet(tmp_path / "bucket")
    env = {**os.environ, "KERAS_VIT_WEIGHTS_URL": (tmp_path / "bucket").as_uri(),
           "KERAS_HOME": str(tmp_path / "keras_home"), "KERAS_VIT_CACHE_DIR": "",
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [os.path.join(os.path.dirname(sys.executable), "keras-vit"), "convert",
               "imagenet", "ti32.weights.h5", "--model", "ViTTi16", "--patch-size", "32",
               "--patch-embed-resample", "pi"]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "keras_vit.ViTTi16(image_size=384, patch_size=32," in done.stdout
    model = keras_vit.ViTTi16(image_size=384, patch_size=32, classifier_activation=None,
                              weights=str(tmp_path / "ti32.weights.h5"))
    expected = pi_resize_patch_embedding(params["embedding/kernel"], 32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.get_layer("embedding").kernel),
                               expected, rtol=1e-5, atol=1e-7)


def test_pi_resized_model_saves_and_loads(rng, tmp_path):
    source = keras_vit.ViT(image_size=8, patch_size=2, hidden_size=16, num_layers=1,
                           num_heads=2, mlp_dim=32, classes=3)
    path = save_npz(source, str(tmp_path / "vit2.npz"))
    model = keras_vit.ViT(image_size=16, patch_size=4, hidden_size=16, num_layers=1,
                          num_heads=2, mlp_dim=32, classes=3, weights=path, head="new",
                          patch_embed_resample="pi_bicubic")
    model.save(tmp_path / "m.keras")
    back = keras.saving.load_model(tmp_path / "m.keras")
    x = rng.uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(keras.ops.convert_to_numpy(back(x)),
                               keras.ops.convert_to_numpy(model(x)), atol=1e-6)


def teardown_module(module):
    for key, value in FIGURES.items():
        print(f"[patch_resize] {keras.backend.backend()}: {key} = {value:.3g}")
