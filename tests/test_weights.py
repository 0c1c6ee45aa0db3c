"""The weight registry, verified downloads, and `weights=` with the keras.applications rules.

No network: registry files are stand-ins with the published key layout and shapes, served from
a local `file://` "bucket" (`$KERAS_VIT_WEIGHTS_URL`) into a temporary cache
(`$KERAS_VIT_CACHE_DIR`); the download checks also run against a loopback HTTP server.
"""

import hashlib
import http.server
import math
import os
import re
import threading
import urllib.parse

import keras
import numpy as np
import pytest

import keras_vit
from conftest import require
from keras_vit.checkpoint import POS_EMBED_KEY, official_variables
from keras_vit.weights import registry
from keras_vit.weights.download import WeightsDownloadError, WeightsIntegrityError, fetch
from keras_vit.weights.shapes import entry_shapes, official_shapes

# Parameter counts at 224 px with a 1000-class head (REFERENCE.md, official configs).
PARAMS = {
    "ViTTi16": 5_717_416, "ViTS16": 22_050_664, "ViTS32": 22_878_952, "ViTB32": 88_224_232,
    "ViTB16": 86_567_656, "ViTB8": 86_576_872, "ViTL32": 306_535_400, "ViTL16": 304_326_632,
    "ViTH14": 632_045_800, "ViTR50B16": 98_659_112,
}
STEMS = {  # variant -> (paper file stem, AugReg stem)
    "ViTTi16": (None, "Ti_16"), "ViTS16": (None, "S_16"), "ViTS32": (None, "S_32"),
    "ViTB8": ("ViT-B_8", "B_8"), "ViTB16": ("ViT-B_16", "B_16"), "ViTB32": ("ViT-B_32", "B_32"),
    "ViTL16": ("ViT-L_16", "L_16"), "ViTL32": ("ViT-L_32", None), "ViTH14": ("ViT-H_14", None),
    "ViTR50B16": ("R50+ViT-B_16", None),
}
AUGREG_NAME = re.compile(
    r"^augreg/(?P<stem>[A-Za-z]+_\d+)-(?P<ds>i21k|i1k)-300ep-lr_0\.001-aug_[a-z]+\d?-wd_0\.\d+"
    r"-do_0\.\d-sd_0\.\d(?P<ft>--imagenet2012-steps_20k-lr_0\.0\d-res_(?P<res>\d+))?\.npz$"
)


def stem_stride(variant):
    return 16 if keras_vit.VARIANTS[variant].get("resnet_num_layers") else 1


def squeeze(shape):
    return tuple(s for s in shape if s != 1)


def fake_file(path, shapes, seed=0, compressed=False):
    """A stand-in checkpoint: the given keys and shapes, small random values (or constants)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for i, (key, shape) in enumerate(sorted(shapes.items())):
        if compressed:  # big hybrids: constant per key, so the file stays small
            arrays[key] = np.full(shape, 0.01 * (i % 7) - 0.03, np.float32)
        else:
            arrays[key] = (0.05 * rng.standard_normal(shape)).astype(np.float32)
        if key.endswith("/scale"):
            arrays[key] = arrays[key] + np.float32(1.0)
    if "head/kernel" in arrays and shapes["head/kernel"][-1] == 21843 and compressed:
        arrays["head/kernel"][:] = 0  # the paper's 21k files: zeroed head
        arrays["head/bias"][:] = 0
    os.makedirs(os.path.dirname(path), exist_ok=True)
    (np.savez_compressed if compressed else np.savez)(path, **arrays)
    return arrays


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    """A local stand-in for gs://vit_models and an empty download cache."""
    root, cache = tmp_path / "bucket", tmp_path / "cache"
    root.mkdir()
    monkeypatch.setenv("KERAS_VIT_WEIGHTS_URL", root.as_uri())
    monkeypatch.setenv("KERAS_VIT_CACHE_DIR", str(cache))
    return dict(root=root, cache=cache / "keras_vit")


def publish(bucket, entry, **kwargs):
    return fake_file(str(bucket["root"] / entry.path), entry_shapes(entry), **kwargs)


def cached(bucket):
    return sorted(os.listdir(bucket["cache"])) if bucket["cache"].exists() else []


def value(variable):
    return keras.ops.convert_to_numpy(variable)


# --------------------------------------------------------------------------- registry contents


def test_registry_covers_every_published_file():
    paths = {e.path for e in registry.all_entries()}
    for stem in ("ViT-B_16", "ViT-B_32", "ViT-B_8", "ViT-L_16", "ViT-L_32", "ViT-H_14", "R50+ViT-B_16"):
        assert f"imagenet21k/{stem}.npz" in paths
    for stem in ("ViT-B_16", "ViT-B_16-224", "ViT-B_32", "ViT-B_8", "ViT-L_16", "ViT-L_16-224",
                 "ViT-L_32", "R50+ViT-B_16"):
        assert f"imagenet21k+imagenet2012/{stem}.npz" in paths
    augreg = {p for p in paths if p.startswith("augreg/")}
    for stem in ("Ti_16", "S_16", "S_32", "B_16", "B_32", "L_16"):
        for suffix in ("", "--imagenet2012-steps_20k-lr_0.0[13]-res_224", "--imagenet2012-steps_20k-lr_0.0[13]-res_384"):
            assert any(re.fullmatch(rf"augreg/{stem}-i21k-.*{suffix}\.npz", p) for p in augreg), (stem, suffix)
    assert len(paths) == len(registry.all_entries())  # no file listed twice


@pytest.mark.parametrize("entry", registry.all_entries(), ids=lambda e: f"{e.variant}:{e.name}")
def test_entry_is_consistent(entry):
    assert entry.variant in keras_vit.VARIANTS
    assert entry.url == registry.BASE_URL + urllib.parse.quote(entry.path)
    assert urllib.parse.unquote(entry.url) == "https://storage.googleapis.com/vit_models/" + entry.path
    assert entry.filename == entry.path.replace("/", "_")
    assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)
    paper_stem, augreg_stem = STEMS[entry.variant]
    if entry.path.startswith("augreg/"):
        match = AUGREG_NAME.match(entry.path)
        assert match, entry.path
        assert match["stem"] == augreg_stem
        assert (match["ft"] is None) == (entry.finetuning is None)
        assert entry.pretraining == {"i21k": "imagenet21k", "i1k": "imagenet2012"}[match["ds"]]
        if match["res"]:
            assert int(match["res"]) == entry.resolution
        assert not entry.has_pre_logits and entry.head_usable
    else:
        folder, file = entry.path.split("/")
        assert file.removesuffix(".npz").removesuffix("-224") == paper_stem
        assert folder == ("imagenet21k" if entry.finetuning is None else "imagenet21k+imagenet2012")
        # The paper's 21k files: pre_logits and a zeroed head; fine-tuned ones neither.
        assert entry.has_pre_logits == (entry.finetuning is None) == (not entry.head_usable)
        if file.endswith("-224.npz"):
            assert entry.resolution == 224
    assert entry.num_classes == (21843 if entry.finetuning is None else 1000)
    assert entry.resolution in (224, 384, None)
    assert entry.finetuning is not None or entry.resolution == 224
    assert (entry.top1 is None) == (entry.top1_source is None)
    if entry.top1 is not None:
        assert entry.finetuning == "imagenet2012" and 70 < entry.top1 < 90
    assert "x / 127.5 - 1" in entry.preprocessing
    # Shapes from the variant's config: tokens follow the resolution, heads the class count.
    shapes = entry_shapes(entry)
    grid = (entry.resolution or 224) // stem_stride(entry.variant) // keras_vit.VARIANTS[entry.variant]["patch_size"]
    assert shapes[POS_EMBED_KEY] == (1, grid * grid + 1, keras_vit.VARIANTS[entry.variant]["hidden_size"])
    assert shapes["head/bias"] == (entry.num_classes,)
    assert ("pre_logits/kernel" in shapes) == entry.has_pre_logits


def test_short_names_resolve_per_variant():
    for variant, aliases in registry.ALIASES.items():
        names = keras_vit.list_weights(variant)
        assert names[: len(aliases)] == sorted(aliases)
        for alias, target in aliases.items():
            entry = keras_vit.get_weights_entry(variant, alias)
            assert entry.name == target and entry.variant == variant
        imagenet = [registry.get_weights_entry(variant, n) for n in names
                    if registry.get_weights_entry(variant, n).finetuning == "imagenet2012"]
        if "imagenet" in aliases:
            chosen = registry.get_weights_entry(variant, "imagenet")
            assert chosen.num_classes == 1000 and chosen.pretraining == "imagenet21k"
            published = [e.top1 for e in imagenet if e.top1 is not None]
            if published:  # the best published ImageNet-1k top-1 of the variant
                assert chosen.top1 == max(published)
        else:
            assert not imagenet
    assert keras_vit.get_weights_entry("ViTB16", "imagenet").top1 == 85.49
    assert keras_vit.get_weights_entry("ViTB16", "imagenet21k").path == "imagenet21k/ViT-B_16.npz"
    assert keras_vit.get_weights_entry("ViTTi16", "imagenet21k").path.startswith("augreg/Ti_16-i21k")
    for spelling in ("ViT-B/16", "B_16", "vitb16", "ViT-B_16"):
        assert registry.canonical_variant(spelling) == "ViTB16"
    assert registry.canonical_variant("R50+ViT-B/16") == "ViTR50B16"


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match=r"Unknown weights 'imagenett' for ViTB16\. Valid names: imagenet, .*augreg-in21k"):
        keras_vit.ViTB16(weights="imagenett")
    with pytest.raises(ValueError, match=r"Unknown weights 'imagenet' for ViTH14\. Valid names: imagenet21k;"):
        keras_vit.ViTH14(weights="imagenet")
    with pytest.raises(ValueError, match="standard variants"):
        keras_vit.ViT(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=4,
                      mlp_dim=64, weights="imagenet")
    with pytest.raises(ValueError, match="Unknown variant 'ViT-Q/3'"):
        keras_vit.list_weights("ViT-Q/3")


# --------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("variant", sorted(PARAMS))
def test_config_shapes_give_the_published_parameter_counts(variant):
    shapes = official_shapes(**keras_vit.VARIANTS[variant], image_size=224, classes=1000)
    assert sum(math.prod(s) for s in shapes.values()) == PARAMS[variant]


@pytest.mark.parametrize("kwargs", [
    dict(image_size=384, classes=1000),
    dict(image_size=224, classes=21843, representation_size=192),
    dict(image_size=224, include_top=False),
])
def test_config_shapes_match_a_built_model(kwargs):
    model = keras_vit.ViTTi16(**kwargs)
    built = {k: tuple(v.shape) for k, v in official_variables(model).items()}
    expected = official_shapes(**keras_vit.VARIANTS["ViTTi16"], **kwargs)
    assert built == expected


# --------------------------------------------------------------------------- registry weights=


def test_imagenet_builds_at_native_resolution_and_loads_every_array(bucket):
    entry = keras_vit.get_weights_entry("ViTTi16", "imagenet")
    arrays = publish(bucket, entry)
    model = keras_vit.ViTTi16(weights="imagenet")
    assert model.input_shape == (None, 384, 384, 3) and model.output_shape == (None, 1000)
    assert cached(bucket) == [entry.filename]
    for key, variable in official_variables(model).items():
        np.testing.assert_array_equal(value(variable), arrays[key].reshape(variable.shape))
    assert all(b.gelu_approximate for b in model.layers if isinstance(b, keras_vit.TransformerBlock))
    probs = keras.ops.convert_to_numpy(model(np.zeros((1, 384, 384, 3), "float32")))
    assert probs.shape == (1, 1000) and abs(probs.sum() - 1) < 1e-4
    assert len(keras_vit.decode_predictions(probs, top=3)[0]) == 3


def test_registry_name_wins_over_a_same_named_folder(bucket, tmp_path, monkeypatch):
    publish(bucket, keras_vit.get_weights_entry("ViTTi16", "imagenet"))
    (tmp_path / "imagenet").mkdir()  # e.g. a dataset folder in the working directory
    monkeypatch.chdir(tmp_path)
    model = keras_vit.ViTTi16(weights="imagenet", include_top=False)
    assert model.input_shape == (None, 384, 384, 3)
    with pytest.raises(ValueError, match="no model.safetensors"):
        keras_vit.ViTTi16(weights="./imagenet")  # the explicit path is the folder


def _official_zoom(posemb, grid):
    """vit_jax/checkpoint.py: class row aside, the (24, 24, D) grid through scipy's order-1 zoom."""
    import scipy.ndimage

    side = int(math.isqrt(posemb.shape[1] - 1))
    rows = posemb[0, 1:].reshape(side, side, -1)
    zoomed = scipy.ndimage.zoom(rows, (grid / side, grid / side, 1), order=1)
    return np.concatenate([posemb[:, :1], zoomed.reshape(1, grid * grid, -1)], axis=1)


def _timm_bicubic(posemb, grid):
    """timm's resample_abs_pos_embed: torch bicubic, antialias, align_corners False, NCHW."""
    import torch

    side = int(math.isqrt(posemb.shape[1] - 1))
    rows = torch.from_numpy(posemb[:, 1:].reshape(1, side, side, -1)).permute(0, 3, 1, 2)
    rows = torch.nn.functional.interpolate(rows, size=(grid, grid), mode="bicubic", antialias=True,
                                           align_corners=False)
    rows = rows.permute(0, 2, 3, 1).reshape(1, grid * grid, -1).numpy()
    return np.concatenate([posemb[:, :1], rows], axis=1)


def test_other_resolution_resamples_with_the_chosen_algorithm(bucket):
    entry = keras_vit.get_weights_entry("ViTTi16", "imagenet")
    arrays = publish(bucket, entry)
    posemb = arrays[POS_EMBED_KEY]
    assert posemb.shape == (1, 24 * 24 + 1, 192)
    expected = {"official": _official_zoom(posemb, 14), "bicubic": _timm_bicubic(posemb, 14)}
    for method in ("official", "bicubic"):
        model = keras_vit.ViTTi16(weights="imagenet", image_size=224, pos_embed_resample=method)
        actual = value(model.get_layer("embedding").pos_embedding)
        np.testing.assert_allclose(actual, expected[method], rtol=0, atol=1e-5, err_msg=method)
    assert np.abs(expected["official"] - expected["bicubic"]).max() > 1e-3  # the choice shows


def test_unpublished_resolution_is_read_from_the_file(bucket, monkeypatch):
    import dataclasses

    entry = keras_vit.get_weights_entry("ViTTi16", "augreg-in21k-ft-in1k-224")
    publish(bucket, entry)
    monkeypatch.setitem(registry.REGISTRY["ViTTi16"], entry.name, dataclasses.replace(entry, resolution=None))
    model = keras_vit.ViTTi16(weights=entry.name, include_top=False)
    assert model.input_shape == (None, 224, 224, 3)


def test_classes_must_match_a_loaded_head(bucket):
    publish(bucket, keras_vit.get_weights_entry("ViTTi16", "imagenet"))
    with pytest.raises(ValueError, match=r"1000-class head, so with include_top=True `classes` must be 1000; received classes=10.*head='new'"):
        keras_vit.ViTTi16(weights="imagenet", classes=10)
    assert cached(bucket) == []  # refused before downloading anything
    model = keras_vit.ViTTi16(weights="imagenet", classes=10, head="new", classifier_activation=None)
    assert model.output_shape == (None, 10)
    assert not np.any(value(model.get_layer("head").kernel))  # the paper's zero-initialised head
    features = keras_vit.ViTTi16(weights="imagenet", include_top=False, pooling="token")
    assert features.output_shape == (None, 192)
    with pytest.raises(ValueError, match="head='new' adds a fresh classifier and needs include_top=True"):
        keras_vit.ViTTi16(weights="imagenet", include_top=False, head="new")
    with pytest.raises(ValueError, match="Unknown head 'fresh'"):
        keras_vit.ViTTi16(weights="imagenet", head="fresh")


def test_augreg_21k_head_is_a_21843_class_classifier(bucket):
    entry = keras_vit.get_weights_entry("ViTTi16", "imagenet21k")
    publish(bucket, entry)
    with pytest.raises(ValueError, match="classes` must be 21843"):
        keras_vit.ViTTi16(weights="imagenet21k")
    model = keras_vit.ViTTi16(weights="imagenet21k", classes=21843)
    assert model.output_shape == (None, 21843) and model.input_shape == (None, 224, 224, 3)
    assert "pre_logits" not in [layer.name for layer in model.layers]


def test_paper_21k_zeroed_head_is_refused_and_hybrid_layout_loads(bucket):
    entry = keras_vit.get_weights_entry("ViTR50B16", "imagenet21k")
    with pytest.raises(ValueError, match="head is zeroed.*cannot be used as a classifier.*include_top=False.*weights='imagenet'"):
        keras_vit.ViTR50B16(weights="imagenet21k")
    assert cached(bucket) == []  # refused without downloading
    arrays = publish(bucket, entry, compressed=True)
    model = keras_vit.ViTR50B16(weights="imagenet21k", head="new", classes=10)
    names = [layer.name for layer in model.layers]
    assert "pre_logits" not in names and model.output_shape == (None, 10)
    loaded = official_variables(model)
    assert set(loaded) == set(arrays) - {"pre_logits/kernel", "pre_logits/bias"}
    for key in ("conv_root/kernel", "gn_root/scale", "block3/unit1/gn_proj/bias",
                "block2/unit4/conv2/kernel", POS_EMBED_KEY, "Transformer/encoderblock_11/MlpBlock_3/Dense_1/bias"):
        np.testing.assert_array_equal(squeeze(value(loaded[key]).shape), squeeze(arrays[key].shape))
        np.testing.assert_array_equal(value(loaded[key]).ravel(), arrays[key].ravel())
    assert not np.any(value(loaded["head/kernel"]))
    # The same file through a file path: the zeroed head is detected from the arrays.
    path = str(bucket["cache"] / entry.filename)
    with pytest.raises(ValueError, match="head is zeroed"):
        keras_vit.load_weights(keras_vit.ViT(**keras_vit.VARIANTS["ViTR50B16"], image_size=32,
                                             representation_size=768, classes=21843), path)


def test_load_weights_by_name_finds_the_variant(bucket):
    publish(bucket, keras_vit.get_weights_entry("ViTTi16", "imagenet"))
    model = keras_vit.ViTTi16(image_size=64, include_top=False)
    keras_vit.load_weights(model, "imagenet")
    with pytest.raises(ValueError, match="1000-class head but the model's head has 7 classes"):
        keras_vit.load_weights(keras_vit.ViTTi16(image_size=64, classes=7), "imagenet")
    fresh = keras_vit.ViTTi16(image_size=64, classes=7)
    keras_vit.load_weights(fresh, "imagenet", head="new")
    assert not np.any(value(fresh.get_layer("head").kernel))


# --------------------------------------------------------------------------- downloads


def test_download_checks_the_hash_and_never_keeps_a_bad_file(tmp_path):
    source = tmp_path / "ViT-X.npz"
    np.savez(source, a=np.arange(10.0))
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    cache = tmp_path / "cache"
    target = cache / "keras_vit" / "x.npz"
    with pytest.raises(WeightsIntegrityError, match=rf"SHA-256 is {good}, expected {'0' * 64}.*deleted"):
        fetch(source.as_uri(), "x.npz", sha256="0" * 64, cache_dir=str(cache))
    assert not target.exists()
    path = fetch(source.as_uri(), "x.npz", sha256=good.upper(), cache_dir=str(cache))
    assert path == str(target) and target.read_bytes() == source.read_bytes()
    target.write_bytes(b"corrupted")  # a damaged cache entry is replaced, not trusted
    assert fetch(source.as_uri(), "x.npz", sha256=good, cache_dir=str(cache)) == str(target)
    assert target.read_bytes() == source.read_bytes()


def test_download_without_hash_rejects_a_truncated_archive(tmp_path):
    source = tmp_path / "cut.npz"
    np.savez(source, a=np.arange(1000.0))
    source.write_bytes(source.read_bytes()[:-200])
    cache = tmp_path / "cache"
    with pytest.raises(WeightsIntegrityError, match="not a complete .npz archive.*deleted"):
        fetch(source.as_uri(), "cut.npz", cache_dir=str(cache))
    assert not (cache / "keras_vit" / "cut.npz").exists()


def test_unreadable_cached_file_is_deleted(bucket):
    entry = keras_vit.get_weights_entry("ViTTi16", "imagenet")
    bucket["cache"].mkdir(parents=True)
    (bucket["cache"] / entry.filename).write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ValueError, match="could not be read and was deleted"):
        keras_vit.ViTTi16(weights="imagenet")
    assert cached(bucket) == []


class _Handler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self):  # noqa: N802 (http.server API)
        if self.path.endswith("missing.npz"):
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body) + 5000))  # promises more than sent
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    httpd.timeout = 5
    thread = threading.Thread(target=httpd.serve_forever, kwargs=dict(poll_interval=0.05), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_download_over_http_truncated_or_missing(server, tmp_path):
    _Handler.body = b"x" * 1000
    cache = tmp_path / "cache"
    with pytest.raises(WeightsDownloadError, match=r"Could not download http://127\.0\.0\.1.*Nothing was kept"):
        fetch(f"{server}/ViT.npz", "ViT.npz", sha256="0" * 64, cache_dir=str(cache))
    with pytest.raises(WeightsDownloadError, match="404"):
        fetch(f"{server}/missing.npz", "missing.npz", cache_dir=str(cache))
    assert not any(cache.rglob("*.npz"))


# --------------------------------------------------------------------------- resampling, docs


@pytest.mark.parametrize("old, new", [((7, 7), (12, 12)), ((24, 24), (14, 14)), ((14, 14), (24, 24)),
                                      ((5, 5), (3, 8)), ((2, 2), (9, 9)), ((9, 9), (2, 2))])
def test_bicubic_resize_matches_torch_antialiased_bicubic(old, new):
    torch = require("torch")
    from keras_vit.resample import bicubic_resize

    grid = np.random.default_rng(0).standard_normal((*old, 5))
    expected = torch.nn.functional.interpolate(
        torch.from_numpy(grid.transpose(2, 0, 1)[None]), size=new, mode="bicubic",
        antialias=True, align_corners=False)[0].numpy().transpose(1, 2, 0)
    actual = bicubic_resize(grid, new)
    assert actual.shape == (*new, 5)
    np.testing.assert_allclose(actual, expected, rtol=0, atol=1e-12)
    if old != new:  # and it is not the non-antialiased (a = -0.75) kernel
        plain = torch.nn.functional.interpolate(
            torch.from_numpy(grid.transpose(2, 0, 1)[None]), size=new, mode="bicubic",
            align_corners=False)[0].numpy().transpose(1, 2, 0)
        assert np.abs(actual - plain).max() > 1e-3


def test_docs_table_lists_every_entry():
    path = os.path.join(os.path.dirname(__file__), "..", "docs", "pretrained_weights.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for entry in registry.all_entries():
        assert f"`{entry.path}`" in text, entry.path
        if entry.top1 is not None:
            assert re.search(rf"\| {entry.variant} \| `{re.escape(entry.name)}`[^\n]*\| {entry.top1:.2f} \|", text)
