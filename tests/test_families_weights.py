"""The later ViTs by name: the constructors, their registry entries (hub safetensors URLs),
named loads from a local mirror of the hub in each family's published layout, the download's
integrity check, and parameter counts equal to HF's for every named size.

No network: `$HF_ENDPOINT` points the registry at a `file://` mirror holding
`{repo}/resolve/main/model.safetensors`, written the way the hub holds it (a transformers
`save_pretrained` file for DINOv2, timm's layout for SigLIP, MAE and DeiT-III). The named
loads shrink the variant's size (same options, same layout) so that the files are small; the
sizes themselves are checked by counting, against HF's models built without memory.
"""

import dataclasses
import math
import shutil

import keras
import numpy as np
import pytest

import keras_vit
from conftest import once, require
from keras_vit.architectures import FAMILY_VARIANTS
from keras_vit.weights import registry
from keras_vit.weights.download import WeightsIntegrityError
from keras_vit.weights.shapes import entry_shapes, official_shapes
from numpy_vit import deit3_forward, make_deit3_state

torch = require("torch")
transformers = require("transformers")

from family_files import (  # noqa: E402
    D, HEADS, LAYERS, MLP, hf_model, mae_original, nchw, randomise, relative_error,
    save_safetensors, siglip_timm, state_of)

TOLERANCE = 1e-4
TINY = dict(hidden_size=D, num_layers=LAYERS, num_heads=HEADS, mlp_dim=MLP)
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A local stand-in for https://huggingface.co and an empty download cache."""
    root = tmp_path / "hub"
    root.mkdir()
    monkeypatch.setenv("HF_ENDPOINT", root.as_uri())
    monkeypatch.setenv("KERAS_VIT_CACHE_DIR", str(tmp_path / "cache"))
    return dict(root=root, cache=tmp_path / "cache" / "keras_vit")


def shrink(monkeypatch, variant, resolution, classes=None):
    """The variant at the tiny size (its options kept) and its entries at `resolution`."""
    monkeypatch.setitem(FAMILY_VARIANTS, variant, {**FAMILY_VARIANTS[variant], **TINY})
    for name, entry in list(registry.FAMILY_REGISTRY[variant].items()):
        monkeypatch.setitem(registry.FAMILY_REGISTRY[variant], name, dataclasses.replace(
            entry, resolution=resolution, num_classes=classes or entry.num_classes))


def publish(hub, entry, source):
    target = hub["root"] / entry.path
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source, target)
    return target


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def imagenet_normalised(pixels):
    return ((pixels / 255.0 - MEAN) / STD).astype("float32")


# --------------------------------------------------------------------------- named loads


def test_dinov2_with_registers_by_name(hub, monkeypatch, tmp_path, rng):
    """HF layout (`facebook/dinov2-with-registers-small`), resampled to another grid as HF's
    Dinov2WithRegisters does, ImageNet normalisation inside the model."""
    shrink(monkeypatch, "DINOv2S14Reg4", 28)
    model = hf_model("dinov2_registers", native=28, patch=14)
    model.config.num_register_tokens = 2
    randomise(model, seed=11)
    model.save_pretrained(tmp_path / "hf")
    entry = keras_vit.get_weights_entry("DINOv2S14Reg4", "lvd142m")
    assert entry.path == "facebook/dinov2-with-registers-small/resolve/main/model.safetensors"
    publish(hub, entry, tmp_path / "hf" / "model.safetensors")
    monkeypatch.setitem(FAMILY_VARIANTS, "DINOv2S14Reg4",
                        {**FAMILY_VARIANTS["DINOv2S14Reg4"], "num_register_tokens": 2})
    ours = keras_vit.DINOv2S14Reg4(weights="lvd142m", image_size=42, pooling="token",
                                   last_block_class_token_only=False)
    assert sorted(p.name for p in hub["cache"].iterdir()) == [entry.filename]
    pixels = rng.uniform(0, 255, (2, 42, 42, 3)).astype("float32")
    tokens = _matches_hf(model, ours, pixels, prefix=1 + 2)
    # Patch maps without the class and register tokens.
    maps = numpy(keras_vit.feature_extractor(ours, blocks=-1, output="spatial", norm=True)(pixels))
    np.testing.assert_allclose(maps, tokens[:, 3:].reshape(2, 3, 3, D), atol=1e-5)
    # load_weights by name finds the variant from the model's size and options.
    again = keras_vit.DINOv2S14Reg4(image_size=42)
    keras_vit.load_weights(again, "lvd142m")
    np.testing.assert_allclose(numpy(again(pixels)), tokens, atol=1e-5)
    # Fine-tuning (examples/finetune_folder.py's call): a new zero head on the same backbone.
    tune = keras_vit.DINOv2S14Reg4(weights="lvd142m", image_size=42, include_top=True,
                                   classes=3, head="new", classifier_activation=None)
    assert tune.output_shape == (None, 3) and not np.any(numpy(tune.get_layer("head").kernel))
    np.testing.assert_array_equal(numpy(tune.get_layer("registers").registers),
                                  numpy(ours.get_layer("registers").registers))


def test_dinov2_by_name(hub, monkeypatch, tmp_path, rng):
    """DINOv2 without registers: HF layout (`facebook/dinov2-small`, model_type "dinov2"),
    downloaded by name from the mirror, its 28 px table resampled to 42 px as HF's Dinov2."""
    shrink(monkeypatch, "DINOv2S14", 28)
    model = hf_model("dinov2", native=28, patch=14)
    randomise(model, seed=12)
    model.save_pretrained(tmp_path / "hf")
    entry = keras_vit.get_weights_entry("DINOv2S14", "lvd142m")
    assert entry.path == "facebook/dinov2-small/resolve/main/model.safetensors"
    publish(hub, entry, tmp_path / "hf" / "model.safetensors")
    ours = keras_vit.DINOv2S14(weights="lvd142m", image_size=42, pooling="token",
                               last_block_class_token_only=False)
    assert sorted(p.name for p in hub["cache"].iterdir()) == [entry.filename]
    _matches_hf(model, ours, rng.uniform(0, 255, (2, 42, 42, 3)).astype("float32"), prefix=1)


def _matches_hf(model, ours, pixels, prefix):
    """HF's last hidden state and pooled output on ImageNet-normalised pixels, against ours
    on the raw pixels (the normalisation is inside our model); returns our tokens."""
    with torch.no_grad():
        out = model(pixel_values=nchw(imagenet_normalised(pixels)))
    both = keras.Model(ours.inputs, [ours.get_layer("encoder_norm").output, ours.output])
    tokens, pooled = (numpy(y) for y in both(pixels))
    assert tokens.shape == (2, prefix + 9, D)
    assert relative_error(tokens, out.last_hidden_state.numpy()) < TOLERANCE
    assert relative_error(pooled, out.pooler_output.numpy()) < TOLERANCE
    return tokens


def test_siglip_by_name(hub, monkeypatch, tmp_path, rng):
    """timm's layout (`timm/vit_base_patch16_siglip_224.webli`), [-1, 1] inputs, MAP head."""
    shrink(monkeypatch, "SigLIPB16", 32)
    model = randomise(hf_model("siglip", native=32, patch=16), seed=12)
    entry = keras_vit.get_weights_entry("SigLIPB16", "webli")
    assert entry.repo == "timm/vit_base_patch16_siglip_224.webli" and entry.layout == "timm"
    publish(hub, entry, save_safetensors(siglip_timm(state_of(model)), tmp_path / "s.safetensors"))
    ours = keras_vit.SigLIPB16(weights="webli", pooling="map")
    assert ours.input_shape == (None, 32, 32, 3)  # the entry's resolution
    pixels = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    with torch.no_grad():
        expected = model(pixel_values=nchw(pixels / 127.5 - 1)).pooler_output.numpy()
    assert relative_error(numpy(ours(pixels)), expected) < TOLERANCE


def test_mae_by_name(hub, monkeypatch, tmp_path, rng):
    """timm's copy of the MAE encoder (`timm/vit_base_patch16_224.mae`, no decoder)."""
    shrink(monkeypatch, "MAEB16", 32)
    model = randomise(hf_model("mae", native=32, patch=16), seed=13, keep=("position_embeddings",))
    timm_state = {k: v for k, v in mae_original(state_of(model)).items()
                  if not k.startswith(("decoder", "mask_token"))}
    entry = keras_vit.get_weights_entry("MAEB16", "in1k")
    publish(hub, entry, save_safetensors(timm_state, tmp_path / "m.safetensors"))
    ours = keras_vit.MAEB16(weights="in1k")
    pixels = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    with torch.no_grad():
        out = model(pixel_values=nchw(imagenet_normalised(pixels)),
                    noise=torch.arange(4.0).expand(2, 4))
    assert relative_error(numpy(ours(pixels)), out.last_hidden_state.numpy()) < TOLERANCE


def test_deit3_by_its_short_name(hub, monkeypatch, tmp_path, rng):
    """`weights="imagenet"` is the IN-21k pre-trained classifier (timm's `fb_in22k_ft_in1k`)."""
    from safetensors.numpy import save_file

    shrink(monkeypatch, "DeiT3S16", 32, classes=10)
    state = make_deit3_state(np.random.default_rng(14), image_size=32, patch=16)
    entry = keras_vit.get_weights_entry("DeiT3S16", "imagenet")
    assert entry.repo == "timm/deit3_small_patch16_224.fb_in22k_ft_in1k"
    timm_state = {k.replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma"): v
                  for k, v in state.items()}
    save_file(timm_state, str(tmp_path / "d.safetensors"))
    publish(hub, entry, tmp_path / "d.safetensors")
    ours = keras_vit.DeiT3S16(weights="imagenet", classes=10, classifier_activation=None)
    pixels = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    logits, _ = deit3_forward(state, imagenet_normalised(pixels))
    assert relative_error(numpy(ours(pixels)), logits) < TOLERANCE


def test_truncated_download_is_refused_and_deleted(hub, monkeypatch, tmp_path):
    shrink(monkeypatch, "DeiT3S16", 32, classes=10)
    from safetensors.numpy import save_file

    save_file(make_deit3_state(np.random.default_rng(0), patch=16), str(tmp_path / "d.safetensors"))
    entry = keras_vit.get_weights_entry("DeiT3S16", "in1k")
    data = (tmp_path / "d.safetensors").read_bytes()
    publish(hub, entry, tmp_path / "d.safetensors").write_bytes(data[:-100])
    with pytest.raises(WeightsIntegrityError, match="not a complete .safetensors file.*deleted"):
        keras_vit.DeiT3S16(weights="in1k", classes=10)
    assert not hub["cache"].exists() or not any(hub["cache"].iterdir())


# --------------------------------------------------------------------------- the registry


@once
def test_family_entries_name_their_hub_files():
    repos = {"DINOv2": r"facebook/dinov2-(with-registers-)?(small|base|large)",
             "SigLIP": r"timm/vit_(base_patch16|so400m_patch14)_siglip_\d+\.webli",
             "MAE": r"timm/vit_(base|large|huge)_patch1[46]_224\.mae",
             "DeiT3": r"timm/deit3_(small|base|large)_patch16_(224|384)\.fb_in(1k|22k_ft_in1k)"}
    import re

    entries = registry.family_entries()
    assert len(entries) == 6 + 6 + 3 + 12
    for entry in entries:
        family = next(f for f in repos if entry.variant.startswith(f))
        assert re.fullmatch(repos[family], entry.repo), entry.repo
        assert entry.url == f"https://huggingface.co/{entry.repo}/resolve/main/model.safetensors"
        assert entry.filename == entry.path.replace("/", "_") and entry.sha256 is None
        assert ("Reg4" in entry.variant) == ("with-registers" in entry.repo)
        assert str(entry.resolution) in entry.repo or entry.resolution == 518
        shapes = entry_shapes(entry)
        arch = FAMILY_VARIANTS[entry.variant]
        grid = (entry.resolution // arch["patch_size"]) ** 2
        rows = grid + (family in ("DINOv2", "MAE"))  # SigLIP: no class token; DeiT-III: none
        assert shapes["Transformer/posembed_input/pos_embedding"] == (1, rows, arch["hidden_size"])
        assert (entry.num_classes is None) == (family != "DeiT3")
        assert entry.gelu_approximate == (family == "SigLIP")
        assert ("ImageNet" in entry.preprocessing) == (family != "SigLIP")
    assert keras_vit.list_weights("dinov2-s14-reg4") == ["lvd142m"]
    assert keras_vit.list_weights("DeiT3B16")[0] == "imagenet"
    with pytest.raises(ValueError, match=r"Unknown weights 'imagenet' for MAEB16\. Valid names: in1k"):
        keras_vit.MAEB16(weights="imagenet")


# --------------------------------------------------------------------------- sizes


def _hf_count(model_class, config):
    with torch.device("meta"):
        return sum(p.numel() for p in model_class(config).parameters())


def _our_count(variant, **kwargs):
    arch = FAMILY_VARIANTS[variant]
    return sum(math.prod(s) for s in official_shapes(**{**arch, **kwargs}).values())


def _deit3_timm_count(d, layers, mlp, patch=16, image=224, classes=1000):
    """timm's `deit3_*` state dict, array by array: patch embedding, class token, patch-only
    positions, per block two norms, fused qkv, proj, two LayerScale vectors and the MLP, the
    final norm and the head."""
    block = 2 * 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * mlp + mlp) + (mlp * d + d)
    return (d * 3 * patch * patch + d) + d + (image // patch) ** 2 * d + layers * block \
        + 2 * d + d * classes + classes


@once
def test_parameter_counts_equal_hf_for_every_named_size():
    """HF's models built on the meta device (no memory) against keras_vit's shapes from the
    architecture table (no build; `official_shapes` equals built models, tested below)."""
    counts = {}
    for size, (d, layers, heads) in {"S": (384, 12, 6), "B": (768, 12, 12),
                                     "L": (1024, 24, 16)}.items():
        common = dict(hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
                      mlp_ratio=4, image_size=518, patch_size=14)
        hf = _hf_count(transformers.Dinov2Model, transformers.Dinov2Config(**common))
        # HF's Dinov2 holds a mask token (D values) for masked-image training; keras_vit none.
        counts[f"DINOv2{size}14"] = (_our_count(f"DINOv2{size}14", image_size=518,
                                                include_top=False), hf, d)
        hf = _hf_count(transformers.Dinov2WithRegistersModel,
                       transformers.Dinov2WithRegistersConfig(num_register_tokens=4, **common))
        counts[f"DINOv2{size}14Reg4"] = (_our_count(f"DINOv2{size}14Reg4", image_size=518,
                                                    include_top=False), hf, d)
    for variant, (d, layers, heads, mlp, patch, image) in {
            "SigLIPB16": (768, 12, 12, 3072, 16, 224),
            "SigLIPSo400m14": (1152, 27, 16, 4304, 14, 384)}.items():
        hf = _hf_count(transformers.SiglipVisionModel, transformers.SiglipVisionConfig(
            hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=mlp, image_size=image, patch_size=patch))
        counts[variant] = (_our_count(variant, image_size=image, include_top=False,
                                      pooling="map"), hf, 0)
    for variant, (d, layers, heads, mlp, patch) in {
            "MAEB16": (768, 12, 12, 3072, 16), "MAEL16": (1024, 24, 16, 4096, 16),
            "MAEH14": (1280, 32, 16, 5120, 14)}.items():
        hf = _hf_count(transformers.ViTMAEModel, transformers.ViTMAEConfig(
            hidden_size=d, num_hidden_layers=layers, num_attention_heads=heads,
            intermediate_size=mlp, image_size=224, patch_size=patch))
        counts[variant] = (_our_count(variant, image_size=224, include_top=False), hf, 0)
    for variant, (d, layers) in {"DeiT3S16": (384, 12), "DeiT3B16": (768, 12),
                                 "DeiT3L16": (1024, 24)}.items():
        counts[variant] = (_our_count(variant, image_size=224),
                           _deit3_timm_count(d, layers, 4 * d), 0)
    print("\n[parameters] variant: keras_vit, reference (HF's; timm's arrays for DeiT-III), "
          "reference's mask token")
    for variant, (ours, reference, mask_token) in counts.items():
        print(f"[parameters] {variant}: {ours:,} {reference:,} {mask_token}")
    assert sorted(counts) == sorted(FAMILY_VARIANTS)
    assert all(ours == reference - mask for ours, reference, mask in counts.values()), counts


@once
@pytest.mark.parametrize("variant", ["DINOv2S14Reg4", "SigLIPB16", "MAEB16", "DeiT3S16"])
def test_shapes_from_the_table_equal_a_built_model(variant, monkeypatch):
    """`official_shapes` (used for the counts above) against the built model, each family's
    options at a tiny size (the sizes of a family differ in its four size numbers only), with
    and without top."""
    from keras_vit.checkpoint import official_variables

    monkeypatch.setitem(FAMILY_VARIANTS, variant, {**FAMILY_VARIANTS[variant], **TINY})
    patch = FAMILY_VARIANTS[variant]["patch_size"]
    for kwargs in (dict(include_top=True, classes=7),
                   dict(include_top=False, pooling="map" if "SigLIP" in variant else "avg")):
        model = getattr(keras_vit, variant)(image_size=2 * patch, **kwargs)
        built = {k: tuple(v.shape) for k, v in official_variables(model).items()}
        assert built == official_shapes(**{**FAMILY_VARIANTS[variant], **kwargs},
                                        image_size=2 * patch)
        assert model.count_params() == sum(math.prod(s) for s in built.values())


# --------------------------------------------------------------------------- the programs


def _tiny_dinov2_registers(tmp_path, seed=11):
    """A small DINOv2-with-registers checkpoint as `save_pretrained` writes it (HF layout, its
    config.json naming the heads), at patch 14 and 28 px."""
    model = hf_model("dinov2_registers", native=28, patch=14)
    randomise(model, seed=seed)
    model.save_pretrained(tmp_path / "dinov2")
    return model, tmp_path / "dinov2"


def test_convert_and_finetune_by_name(hub, monkeypatch, tmp_path, rng, capsys):
    """`keras-vit convert lvd142m ... --model DINOv2S14Reg4` writes the backbone as
    .weights.h5; `finetune --model DINOv2S14Reg4 --weights lvd142m` builds it with a new head."""
    from applications import config as config_lib
    from applications import convert, modeling

    shrink(monkeypatch, "DINOv2S14Reg4", 28)
    monkeypatch.setitem(FAMILY_VARIANTS, "DINOv2S14Reg4",
                        {**FAMILY_VARIANTS["DINOv2S14Reg4"], "num_register_tokens": 2})
    _, directory = _tiny_dinov2_registers(tmp_path)
    entry = keras_vit.get_weights_entry("DINOv2S14Reg4", "lvd142m")
    publish(hub, entry, directory / "model.safetensors")
    parser = __import__("argparse").ArgumentParser()
    convert.add_parser(parser.add_subparsers(dest="command"))
    dst = tmp_path / "dinov2.weights.h5"
    args = parser.parse_args(["convert", "lvd142m", str(dst), "--model", "dinov2-s14-reg4",
                              "--image-size", "42"])
    assert convert.run(args) == 0
    out = capsys.readouterr().out
    assert "no classification head: writing the backbone (include_top=False)" in out
    assert "keras_vit.DINOv2S14Reg4(image_size=42, include_top=False" in out
    pixels = rng.uniform(0, 255, (2, 42, 42, 3)).astype("float32")
    expected = numpy(keras_vit.DINOv2S14Reg4(weights="lvd142m", image_size=42)(pixels))
    rebuilt = keras_vit.DINOv2S14Reg4(image_size=42, include_top=False, weights=str(dst))
    np.testing.assert_array_equal(numpy(rebuilt(pixels)), expected)

    config = config_lib.resolve("finetune", {"dataset": "digits", "model": "DINOv2S14Reg4",
                                             "weights": "lvd142m", "image_size": 42,
                                             "output": str(tmp_path / "run")})
    model = modeling.build_model(config, config.architecture(), num_classes=3)
    assert model.output_shape == (None, 3)
    assert not np.any(numpy(model.get_layer("head").kernel))
    np.testing.assert_array_equal(numpy(model.get_layer("registers").registers),
                                  numpy(rebuilt.get_layer("registers").registers))


@once
def test_finetune_command_on_a_folder_from_a_dinov2_checkpoint(tmp_path):
    """`keras-vit finetune --dataset FOLDER --weights DINOv2_DIR` (the command's own entry,
    in-process; tests/test_newcomer.py runs the installed command in new processes): the
    architecture, GELU and input normalisation come from the checkpoint (its config.json and
    arrays), the backbone is the checkpoint's and the new head learns separable classes."""
    import json

    from PIL import Image

    from applications import cli
    from keras_vit.formats import read_checkpoint

    _, directory = _tiny_dinov2_registers(tmp_path)
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    for label in range(2):
        (folder / f"class_{label}").mkdir(parents=True)
        for i in range(16):
            tint = np.full(3, 40.0)
            tint[label] = 200.0
            pixels = tint * rng.uniform(0.7, 1.2) + rng.normal(0, 25, (28, 28, 3))
            Image.fromarray(pixels.clip(0, 255).astype("uint8")).save(
                folder / f"class_{label}" / f"{i}.png")
    out = tmp_path / "run"
    assert cli.main(["finetune", "--dataset", str(folder), "--weights", str(directory),
                     "--image-size", "28", "--epochs", "3", "--batch-size", "8", "--lr", "0.03",
                     "--output", str(out), "--verbose", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    arch = metrics["architecture"]
    assert arch["num_register_tokens"] == 2 and arch["layer_scale_init_value"] is not None
    assert arch["input_normalization"] == "imagenet" and arch["gelu_approximate"] is False
    assert (arch["patch_size"], arch["hidden_size"], arch["num_heads"]) == (14, D, HEADS)
    print(f"\n[finetune] DINOv2 layout, folder of 2 classes: test accuracy "
          f"{metrics['test']['accuracy']:.3f}, history "
          f"{[round(h['loss'], 3) for h in metrics['history']]}")
    assert metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    # The fine-tuned backbone started from the checkpoint: its registers moved little from the
    # file's values (a fresh initialisation draws them with std 1e-6).
    saved = keras.saving.load_model(out / "model.keras", compile=False)
    registers = read_checkpoint(str(directory)).params["registers"]
    tuned = numpy(saved.get_layer("registers").registers)
    assert np.abs(registers).max() > 0.1
    assert np.abs(tuned - registers).max() < 0.1 * np.abs(registers).max()


@once
def test_docs_list_every_family_entry():
    import os

    path = os.path.join(os.path.dirname(__file__), "..", "docs", "later_vits.md")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for entry in registry.family_entries():
        assert f"`{entry.repo}`" in text and f"`{entry.name}`" in text, entry.repo
    for variant in FAMILY_VARIANTS:
        assert f"`{variant}`" in text or variant in text, variant


@once
@pytest.mark.parametrize("args, message", [
    (["pretrain", "--dataset", "digits", "--model", "DINOv2S14"],
     r"pretrain trains the paper's variants .*DINOv2S14 is a later ViT"),
    (["finetune", "--dataset", "digits", "--model", "DINOv2S14", "--weights", "imagenet",
      "--image-size", "28"], r"Unknown weights 'imagenet' for DINOv2S14\. Valid names: lvd142m"),
    (["train", "--model", "DINOv2S99"], r"Unknown model variant 'DINOv2S99'; valid: .*DINOv2S14"),
])
def test_the_commands_name_bad_later_vit_choices(args, message, capsys, tmp_path):
    from applications import cli

    assert cli.main([*args, "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert __import__("re").search(message, err), err
