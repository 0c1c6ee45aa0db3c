"""The programs' optimizers (kernel-only weight decay, `--layer-decay`) and `keras-vit fewshot`
on a fine-tuned model in a new process. Program logic: once per make test."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import pytest

import keras_vit
from applications import cli, config as config_lib, modeling
from conftest import BACKEND, once
from keras_vit.optimizers import GroupedOptimizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = dict(image_size=8, patch_size=2, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=16)


def optimizer_for(command, **flags):
    config = config_lib.resolve(command, {"dataset": "digits", **flags})
    model = keras_vit.ViT(**ARCH, classes=10)
    plan = modeling.TrainingPlan(steps_per_epoch=10, epochs=1, warmup_steps=1)
    return modeling.make_optimizer(config, plan, model), model


@once
def test_programs_decay_kernels_only_unless_asked_and_take_layer_decay():
    optimizer, _ = optimizer_for("train")  # digits preset: AdamW, weight decay 0.3
    assert type(optimizer) is GroupedOptimizer and optimizer.weight_decay_on == "kernels"
    assert optimizer.inner_optimizer.weight_decay == 0.3 and not optimizer.lr_multipliers
    optimizer, _ = optimizer_for("train", weight_decay_on="all")
    assert type(optimizer).__name__ == "AdamW"  # as before: every variable decays
    optimizer, _ = optimizer_for("finetune")  # the paper's recipe: SGD, no weight decay
    assert type(optimizer).__name__ == "SGD"
    optimizer, model = optimizer_for("finetune", layer_decay=0.75, weight_decay=1e-4)
    assert type(optimizer) is GroupedOptimizer
    assert type(optimizer.inner_optimizer).__name__ == "SGD"
    assert optimizer.lr_multipliers == keras_vit.optimizers.layer_decay(model, 0.75)
    # A run saved before weight_decay_on existed decayed everything; --resume keeps that.
    old = config_lib.RunConfig.from_json({"command": "train", "dataset": "digits", "output": "x"})
    assert old.weight_decay_on == "all"


@once
@pytest.mark.parametrize("flags, message", [
    (["--layer-decay", "1.5"], "--layer-decay 1.5 is invalid; must be in (0, 1]"),
    (["--weight-decay-on", "biases"], "invalid choice: 'biases'"),
])
def test_bad_optimizer_flags_exit_2_with_one_line(flags, message, tmp_path, capsys):
    try:
        code = cli.main(["train", "--output", str(tmp_path / "run"), *flags])
    except SystemExit as e:  # argparse's own choices
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err.splitlines()[-1], err
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """`keras-vit finetune --init BACKBONE --layer-decay 0.75` for two steps."""
    root = tmp_path_factory.mktemp("finetune")
    keras.utils.set_random_seed(0)
    keras_vit.ViT(**ARCH, include_top=False, name="backbone").save(root / "backbone.keras")
    out = root / "tuned"
    code = cli.main(["finetune", "--dataset", "digits", "--init", str(root / "backbone.keras"),
                     "--steps", "2", "--batch-size", "64", "--layer-decay", "0.75",
                     "--weight-decay", "0.01", "--output", str(out), "--verbose", "0"])
    assert code == 0
    return out


@once
def test_finetune_with_layer_decay_in_a_new_process_and_fewshot_on_it(finetuned):
    """The saved model carries its optimizer (loaded with `import keras_vit` alone), and
    `keras-vit fewshot` reads its frozen representation."""
    config = json.loads((finetuned / "config.json").read_text())
    assert config["layer_decay"] == 0.75 and config["weight_decay_on"] == "kernels"
    out = finetuned / "fewshot.json"
    script = textwrap.dedent(f"""
        import sys, keras, keras_vit
        model = keras.saving.load_model({str(finetuned / 'model.keras')!r})
        o = model.optimizer
        print("optimizer", type(o).__name__, type(o.inner_optimizer).__name__,
              o.weight_decay_on, o.lr_multipliers["embedding/cls"],
              o.lr_multipliers["encoderblock_1/MlpBlock_3/Dense_0/kernel"],
              o.lr_multipliers["head/kernel"], int(o.iterations))
        from applications.cli import main
        sys.exit(main(["fewshot", {str(finetuned)!r}, "--shots", "1,5,10,25", "--seeds", "2",
                       "--json", {str(out)!r}]))
        """)
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=300,
                            env=dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(l for l in result.stdout.splitlines() if l.startswith("optimizer"))
    assert line.split()[1:] == ["GroupedOptimizer", "SGD", "kernels", str(0.75 ** 3), "0.75",
                                "1.0", "2"]
    report = json.loads(out.read_text())
    assert report["dataset"] == "digits"  # from the run's config.json
    assert (report["train_images"], report["test_images"], report["feature_dim"]) == (1259, 359, 16)
    assert sorted(report["fewshot"], key=int) == ["1", "5", "10", "25"]
    for r in report["fewshot"].values():
        assert len(r["accuracies"]) == 2 and 0.0 <= r["mean"] <= 1.0
    # Random-ish features still beat chance (0.1) with 25 shots, by the probe and k-NN too.
    assert report["fewshot"]["25"]["mean"] > 0.2
    assert report["linear_probe"] > 0.2 and report["knn"] > 0.2
    assert "| 25-shot linear, 2 seeds |" in result.stdout and "| 20-NN" in result.stdout
