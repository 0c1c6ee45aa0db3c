"""The scripts in examples/ run as a user copies them: `python examples/X.py ...` in a new
process, on each backend."""

import os
import re
import subprocess
import sys

import numpy as np

from conftest import BACKEND, once
from numpy_vit import make_official_params

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_example(name, *args, cwd):
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, os.path.join(ROOT, "examples", name), *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    return done.stdout


def test_train_digits_learns_and_saves(tmp_path):
    out = run_example("train_digits.py", "--epochs", "4", "--output", "m.keras", cwd=tmp_path)
    accuracy = float(re.search(r"test accuracy ([0-9.]+)", out).group(1))
    assert accuracy > 0.3  # 10 classes: chance is 0.1; four epochs get well past it
    assert (tmp_path / "m.keras").is_file()


def _colour_folder(root, per_class=16):
    """Three classes of images whose class is their dominant colour, in three file formats."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for index, (name, suffix) in enumerate([("red", ".png"), ("green", ".jpg"),
                                            ("blue", ".webp")]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            image = rng.uniform(0, 90, (40, 40, 3))
            image[..., index] += 150
            Image.fromarray(image.astype("uint8")).save(root / name / f"{i}{suffix}")


@once  # the same Keras calls as train_digits.py, which runs on every backend
def test_finetune_folder_from_an_official_checkpoint(tmp_path):
    _colour_folder(tmp_path / "photos")
    params = make_official_params(np.random.default_rng(0), image_size=384, patch=16,
                                  hidden=192, layers=12, heads=3, mlp=768, classes=1000)
    np.savez(tmp_path / "ViT-Ti_16.npz", **params)
    out = run_example("finetune_folder.py", "photos", "--weights", "ViT-Ti_16.npz",
                      "--model", "ViTTi16", "--image-size", "32", "--epochs", "3",
                      "--batch-size", "8", "--output", "ft.keras", cwd=tmp_path)
    assert re.search(r"test accuracy [0-9.]+ on \d+ images", out), out[-2000:]
    assert (tmp_path / "ft.keras").is_file()
