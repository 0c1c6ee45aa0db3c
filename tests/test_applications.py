"""End-to-end tests of the `keras-vit` programs, run in-process on each backend.

A tiny ViT trains for a few epochs on `digits`; the saved run is then
evaluated, used for predictions and fine-tuned at a new resolution. Bad input
must give exit code 2 and a message naming the valid choices.
"""

import json

import keras
import numpy as np
import pytest

from applications import cli
from conftest import once

BACKEND = keras.backend.backend()
# Grouped steps on JAX, where `make train` uses them (Keras cannot group them on PyTorch; on
# TensorFlow its in-graph loop only adds compilation time to this test).
STEPS_PER_EXECUTION = 19 if BACKEND == "jax" else 1
TINY = ["--hidden-size", "32", "--num-layers", "1", "--num-heads", "2", "--mlp-dim", "32",
        "--batch-size", "64", "--verbose", "0"]


def run_cli(*args):
    return cli.main([str(a) for a in args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "digits"
    rc = run_cli("train", "--dataset", "digits", "--output", out, "--epochs", 5, "--lr", 5e-3,
                 "--crop-min-area", 1, "--seed", 1, "--steps-per-execution", STEPS_PER_EXECUTION, *TINY)
    assert rc == 0
    return out


def test_train_writes_metrics_curves_checkpoints(trained):
    metrics = json.loads((trained / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["backend"] == BACKEND
    assert metrics["epochs"] == 5 and len(metrics["history"]) == 5
    assert [h["epoch"] for h in metrics["history"]] == [1, 2, 3, 4, 5]
    for split in ("train", "validation", "test"):
        assert 0.0 <= metrics[split]["accuracy"] <= 1.0
        assert np.isfinite(metrics[split]["loss"])
    # Five epochs of a tiny ViT learn far above chance (0.1) on held-out digits
    # (measured 0.51-0.62 across the backends).
    assert metrics["test"]["accuracy"] > 0.4, metrics["test"]
    assert metrics["test"]["top5_accuracy"] > metrics["test"]["accuracy"]
    assert metrics["history"][-1]["loss"] < metrics["history"][0]["loss"]
    assert 0 < metrics["train_time_s"] < 120
    assert (trained / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (trained / "model.keras").stat().st_size > 10_000
    assert (trained / "checkpoint.keras").exists()
    assert list((trained / "logs").rglob("events.out.tfevents*"))
    rows = (trained / "log.csv").read_text().splitlines()
    assert rows[0].startswith("epoch,") and [r.split(",")[0] for r in rows[1:]] == ["1", "2", "3", "4", "5"]
    config = json.loads((trained / "config.json").read_text())
    assert config["optimizer"] == "adamw" and config["clipnorm"] == 1.0
    assert config["architecture"]["patch_size"] == 2 and config["num_classes"] == 10
    # One compiled call per 19-step epoch, and not a step more or less.
    assert config["steps_per_execution"] == STEPS_PER_EXECUTION and metrics["steps_per_epoch"] == 19
    saved = keras.saving.load_model(trained / "model.keras")
    assert int(keras.ops.convert_to_numpy(saved.optimizer.iterations)) == 5 * 19
    assert not list(trained.glob(".tmp-*")) and not list((trained / "backup").glob("tmp-*"))


def test_evaluate_reproduces_the_test_accuracy(trained, capsys):
    capsys.readouterr()
    assert run_cli("evaluate", "--output", trained, "--verbose", 0) == 0
    report = json.loads(capsys.readouterr().out)
    metrics = json.loads((trained / "metrics.json").read_text())
    assert report["examples"] == 359 and report["split"] == "test"
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-6)
    assert report["top5_accuracy"] == pytest.approx(metrics["test"]["top5_accuracy"], abs=1e-6)
    assert json.loads((trained / "eval_test.json").read_text())["accuracy"] == report["accuracy"]


def test_predict_top5_with_class_names(trained, tmp_path, capsys):
    from PIL import Image

    from tf_data import digits
    from tf_data.holdout import stratified_holdout

    # The run's whole test split (which images: the split's own indices), each digit written as
    # a PNG at its native 8 px, so `predict` sees exactly the pixels `evaluate` saw.
    images, labels = digits.load_arrays()
    test = stratified_holdout(labels, digits.VAL_FRACTION, digits.TEST_FRACTION, digits.SPLIT_SEED)["test"]
    assert len(test) == 359
    paths = []
    for i in test:
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(images[i]).save(paths[-1])
    resized = tmp_path / "resized.png"
    Image.fromarray(images[test[0]]).resize((32, 32)).save(resized)  # any size: resized
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    capsys.readouterr()
    rc = run_cli("predict", "--output", trained, "--json", resized, *paths, bad)
    out = capsys.readouterr().out.splitlines()
    assert rc == 1  # one image could not be read
    assert any("broken.jpg: cannot read image" in line for line in out)
    results = [json.loads(line) for line in out if line.startswith("{")]
    assert [r["image"] for r in results] == [str(p) for p in [resized, *paths]]
    for r in results:
        top = r["top"]
        assert len(top) == 5 and len({t["label"] for t in top}) == 5
        assert all(t["label"] == str(t["index"]) for t in top)  # digits' class names
        probs = [t["probability"] for t in top]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-5
    # The labels: top-1 is the saved model's own argmax on the same pixels, computed here
    # (the model rescales [0, 255] itself), ...
    saved = keras.saving.load_model(trained / "model.keras", compile=False)
    assert "rescale" in [layer.name for layer in saved.layers]
    probs = np.asarray(saved.predict(images[test].astype("float32"), verbose=0))
    predicted = np.array([int(r["top"][0]["label"]) for r in results[1:]])
    np.testing.assert_array_equal(predicted, probs.argmax(-1))
    np.testing.assert_allclose([r["top"][0]["probability"] for r in results[1:]],
                               probs.max(-1), rtol=1e-4, atol=1e-5)
    # ... and the fraction of true labels among them is the run's test accuracy (the same 359
    # images; a tie broken otherwise at most).
    metrics = json.loads((trained / "metrics.json").read_text())
    assert abs(np.mean(predicted == labels[test]) - metrics["test"]["accuracy"]) <= 1 / 359 + 1e-9


def test_finetune_from_saved_model_new_resolution_zero_head(trained, tmp_path):
    import keras_vit
    from applications import config as config_lib
    from applications import modeling

    explicit = {"dataset": "digits", "init": str(trained / "model.keras"), "image_size": 16,
                "output": str(tmp_path / "ft")}
    config = config_lib.resolve("finetune", explicit)
    assert config.optimizer == "sgd" and config.weight_decay == 0.0 and config.momentum == 0.9
    model = modeling.build_model(config, config.architecture(), num_classes=10)
    source = keras.saving.load_model(trained / "model.keras", compile=False)
    head = model.get_layer("head")
    assert not np.any(keras.ops.convert_to_numpy(head.kernel))  # new head starts at zero
    assert not np.any(keras.ops.convert_to_numpy(head.bias))
    old_emb = source.get_layer("embedding").pos_embedding
    new_emb = model.get_layer("embedding").pos_embedding
    # The digits preset pools (gap): no class-token row; the 4x4 grid becomes 8x8.
    assert tuple(old_emb.shape) == (1, 16, 32) and tuple(new_emb.shape) == (1, 64, 32)
    # The official resampling (vit_jax/checkpoint.py): scipy's order-1 zoom of the (4, 4, D) grid.
    import scipy.ndimage

    grid = keras.ops.convert_to_numpy(old_emb).reshape(4, 4, 32)
    expected = scipy.ndimage.zoom(grid, (8 / 4, 8 / 4, 1), order=1).reshape(1, 64, 32)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(new_emb), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.get_layer("encoderblock_0").weights[0]),
        keras.ops.convert_to_numpy(source.get_layer("encoderblock_0").weights[0]))

    out = tmp_path / "ft_run"
    rc = run_cli("finetune", "--dataset", "digits", "--init", trained / "model.keras",
                 "--image-size", 16, "--epochs", 2, "--lr", 0.05, "--output", out, "--verbose", 0)
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["command"] == "finetune" and metrics["image_size"] == [16, 16]
    assert metrics["architecture"]["hidden_size"] == 32  # taken from the saved run
    # Two short SGD epochs from the small trained backbone with a zero head:
    # measured 0.38-0.43 on TF; chance is 0.1.
    assert metrics["test"]["accuracy"] > 0.25, metrics["test"]


def test_finetune_from_official_npz_layout(trained, tmp_path):
    from numpy_vit import make_official_params, resample_posemb

    # A 1000-class "pretrained" file in the official .npz layout, its keys and shapes written out
    # by the NumPy reference (not by the library), with a non-zero head.
    params = make_official_params(np.random.default_rng(0), image_size=8, patch=2, hidden=32,
                                  layers=1, heads=2, mlp=32, classes=1000)
    assert params["Transformer/posembed_input/pos_embedding"].shape == (1, 17, 32)
    np.savez(tmp_path / "tiny.npz", **params)
    from applications import config as config_lib
    from applications import modeling

    config = config_lib.resolve("finetune", {"dataset": "digits", "weights": str(tmp_path / "tiny.npz"),
                                             "image_size": 12, "output": str(tmp_path / "o")})
    assert config.hidden_size == 32 and config.num_layers == 1 and config.num_heads == 2
    model = modeling.build_model(config, config.architecture(), num_classes=10)
    assert model.output_shape == (None, 10)
    assert not np.any(keras.ops.convert_to_numpy(model.get_layer("head").kernel))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(model.get_layer("embedding").kernel),
                               params["embedding/kernel"])
    # At 12 px the 4x4 grid becomes 6x6, resampled as the official code does (scipy zoom).
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model.get_layer("embedding").pos_embedding),
        resample_posemb(params["Transformer/posembed_input/pos_embedding"], (6, 6), 1),
        rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "args,message",
    [
        (["train", "--dataset", "cifar11"], r"Unknown dataset 'cifar11'.*'digits'.*cifar10"),
        (["train", "--model", "ViTX99"], r"Unknown model variant 'ViTX99'; valid: ViTTi16, ViTS16"),
        (["train", "--image-size", "4", "--patch-size", "8"], r"Image height 4 is smaller than the patch size 8"),
        (["train", "--batch-size", "5000"], r"Batch size 5000 is larger than the 1259 examples"),
        (["finetune", "--dataset", "digits"], r"finetune needs --weights .* or --init"),
        (["finetune", "--weights", "no/such.npz"], r"Weights .no/such.npz. not found"),
        (["finetune", "--weights", "imagenet21k"], r"registry name: pass --model too"),
        (["evaluate"], r"--output DIR"),
        (["train", "--steps-per-execution", "0"], r"--steps-per-execution 0 is invalid; must be >= 1"),
        (["train", "--steps-per-execution", "2"],
         r"--steps-per-execution 2: Keras runs one step per call on the PyTorch backend" if BACKEND == "torch"
         else r"--steps-per-execution 2 does not divide the 19 steps of an epoch; use one of 1, 19"),
    ],
)
def test_bad_input_exits_2_with_valid_choices(args, message, capsys, tmp_path):
    extra = ["--output", str(tmp_path / "x")] if args[0] in ("train", "finetune") else []
    assert cli.main(args + extra) == 2
    import re

    assert re.search(message, capsys.readouterr().err), args


def test_nan_loss_stops_with_exit_code_3(tmp_path, capsys):
    out = tmp_path / "nan"
    rc = run_cli("train", "--dataset", "digits", "--output", out, "--epochs", 3, "--lr", 1e30, *TINY)
    assert rc == 3
    assert "loss became NaN/inf at epoch 1" in capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "nan" and metrics["epochs"] == 0
    assert not (out / "model.keras").exists()


def test_train_on_image_folder_with_steps_and_corrupt_file(tmp_path):
    from PIL import Image

    # Three classes told apart by colour (red, green, blue tints under pixel noise and varying
    # brightness): separable, so a few steps must learn them. Mixed formats, JPEG's loss included.
    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for label in range(3):
        (root / f"class_{label}").mkdir(parents=True)
        for i in range(30):
            tint = np.full(3, 40.0)
            tint[label] = 200.0
            pixels = tint * rng.uniform(0.7, 1.2) + rng.normal(0, 25, (16, 16, 3))
            ext = ("png", "jpg", "bmp")[i % 3]
            Image.fromarray(pixels.clip(0, 255).astype("uint8")).save(
                root / f"class_{label}" / f"{i}.{ext}")
    (root / "class_0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "run"
    rc = run_cli("train", "--dataset", root, "--output", out, "--steps", 6, "--image-size", 8,
                 "--patch-size", 4, *TINY[:-4], "--batch-size", 8, "--verbose", 0)
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    config = json.loads((out / "config.json").read_text())
    assert metrics["skipped_files"] == 1
    assert config["class_names"] == ["class_0", "class_1", "class_2"]
    sizes = config["split_sizes"]
    assert sizes["test"] >= 3 and sizes["validation"] >= 3  # held out: no val/test folders
    assert metrics["epochs"] * metrics["steps_per_epoch"] >= 6
    assert metrics["epochs"] * metrics["steps_per_epoch"] < 6 + metrics["epochs"]
    # Separable classes: 18/18 test images right after the 6 steps on TensorFlow, JAX and PyTorch
    # (with the folder's labels shuffled against its files: about a third).
    assert metrics["test"]["accuracy"] >= 0.9, metrics["test"]


def test_resume_of_a_finished_run_trains_nothing(trained, tmp_path, capsys):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(trained, out)
    before = json.loads((out / "metrics.json").read_text())
    events_before = (out / "events.jsonl").read_text().count('"begin"')
    capsys.readouterr()
    assert run_cli("train", "--output", out, "--resume", "--lr", 0.5) == 0
    captured = capsys.readouterr().out
    assert "5 epoch(s) already completed" in captured
    assert "ignoring: --lr 0.5" in captured  # a resumed run keeps its own recipe
    after = json.loads((out / "metrics.json").read_text())
    assert (out / "events.jsonl").read_text().count('"begin"') == events_before
    assert after["epochs"] == 5 and after["history"] == before["history"]
    assert after["test"]["accuracy"] == pytest.approx(before["test"]["accuracy"], abs=1e-6)


def test_resume_from_a_damaged_backup_exits_2_naming_the_file(trained, tmp_path, capsys):
    import shutil

    out = tmp_path / "damaged"
    shutil.copytree(trained, out)
    state = json.loads((out / "backup" / "state.json").read_text())
    weights = out / "backup" / state["weights"]
    weights.write_bytes(weights.read_bytes()[:100])  # a truncated copy
    capsys.readouterr()
    assert run_cli("train", "--output", out, "--resume") == 2
    err = capsys.readouterr().err
    assert f"Backup weights {weights} are not a readable .npz" in err, err
    assert "Start afresh without --resume" in err
    (out / "backup" / "state.json").write_text("{not json")
    assert run_cli("train", "--output", out, "--resume") == 2
    assert "backup/state.json is unreadable" in capsys.readouterr().err


@once
def test_a_fresh_run_replaces_an_unusable_backup(tmp_path, capsys):
    out = tmp_path / "run"
    (out / "backup").mkdir(parents=True)
    (out / "backup" / "state.json").write_text(json.dumps({"epoch": 3, "weights": "epoch-3.npz"}))
    assert run_cli("train", "--dataset", "digits", "--output", out, "--steps", 2, *TINY) == 0
    assert "replacing the previous run's unusable backup (Backup" in capsys.readouterr().out
    state = json.loads((out / "backup" / "state.json").read_text())
    assert state["epoch"] >= 1 and (out / "backup" / state["weights"]).exists()


@once
def test_the_default_batch_size_fits_a_small_folder(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(0)
    root = tmp_path / "folder"
    for name, level in (("dark", 40), ("light", 215)):
        (root / name).mkdir(parents=True)
        for i in range(50):
            pixels = np.clip(level + rng.normal(0, 20, (8, 8, 3)), 0, 255).astype("uint8")
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    out = tmp_path / "run"
    arch = TINY[:-4]  # without --batch-size: the recipe's 512
    assert run_cli("train", "--dataset", root, "--output", out, "--steps", 2, "--image-size", 8,
                   "--patch-size", 4, *arch, "--verbose", 0) == 0
    # 70 training images (100 less 10% validation and 20% test): 2^floor(log2(70 / 8)) = 8.
    assert ("The default batch size 512 exceeds the 70 training examples of "
            f"'{root}'; using 8") in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["batch_size"] == 8
    # An explicit batch size that cannot work is still refused.
    assert run_cli("train", "--dataset", root, "--output", out, "--batch-size", 512, *arch[:-2]) == 2
    assert "Batch size 512 is larger than the 70 examples" in capsys.readouterr().err


def test_a_resolution_whose_activations_cannot_fit_is_refused_before_building(trained, capsys):
    from applications import config as config_lib
    from applications import memory

    # digits fine-tunes at its own 8 px (not the recipe's 384).
    saved = str(trained / "model.keras")
    assert config_lib.resolve("finetune", {"dataset": "digits", "weights": saved}).image_size == 8
    # The 8x8 backbone at 384 px: 2x2 patches give a 192 x 192 grid, 36,864 tokens; gap, so no
    # class token. Per example: 36864 * (8 * 32 + 2 * 32) + 2 * 36864^2 values, 1 layer, 4 bytes.
    need, tokens = memory.activation_bytes(
        dict(patch_size=2, hidden_size=32, num_layers=1, num_heads=2, mlp_dim=32, classifier="gap"),
        (384, 384), 64, 4)
    assert tokens == 36_864 and need == 64 * 4 * (36_864 * 320 + 2 * 36_864**2)
    with pytest.raises(memory.UsageError, match=r"use --batch-size 8 or less"):
        # 100 GiB of memory: 10.1 GiB per example, so 9 fit, 8 as a power of two.
        memory.check_training_fits(
            dict(patch_size=2, hidden_size=32, num_layers=1, num_heads=2, mlp_dim=32,
                 classifier="gap"), (384, 384), 64, 4, memory=(100 * 2**30, "test"))
    capsys.readouterr()
    assert run_cli("finetune", "--dataset", "digits", "--init", trained / "model.keras",
                   "--image-size", 384, "--output", trained.parent / "big") == 2
    err = capsys.readouterr().err
    assert "Training at 384x384 px (36,864 tokens) with 64 example(s) per device" in err, err
    assert not (trained.parent / "big" / "model.keras").exists()
