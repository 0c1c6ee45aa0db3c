"""The documented install without TensorFlow, `pip install -c constraints.txt ".[jax]"` from a
clone, in a clean virtual environment, offline.

The new environment starts empty (`python -m venv --without-pip`). The packages `.[jax]`
declares (keras, jax, numpy, ... and what they require, resolved from the project's metadata
and theirs) are lent to it read-only: a `.pth` file puts a folder of links to exactly those
distributions, taken from this test environment, on its path. Nothing else of this environment
is visible there: not TensorFlow, not transformers, not the checkout. pip then installs the
project from a copy of the checkout with no index (`--no-index`; the build backend, setuptools,
lent the same way), so it must find every requirement among the lent distributions and build
the project from its own files. What runs afterwards runs from the installed copy.

What this proves: the project builds and installs from a checkout with the documented command
and the pinned constraints; the `jax` extra's declared dependencies are enough to import
`keras_vit`, build a model, predict, read the shipped class names and save and load a `.keras`
file; TensorFlow is not needed and not installed; the `keras-vit` command is installed and,
without TensorFlow, prints the install line that would add it (exit code 2). What it does not:
that an index serves these versions (no network here), or the `torch` extra (the same code
path, a different lent set).
"""

import json
import os
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata

import pytest

from conftest import once_on

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXTRA = "jax"

CHECK = r"""
import importlib.util, json, os, sys
import numpy as np
assert importlib.util.find_spec("tensorflow") is None, "TensorFlow is importable"
import keras, keras_vit
model = keras_vit.ViT(image_size=16, patch_size=8, hidden_size=16, num_layers=1, num_heads=2,
                      mlp_dim=32, classes=1000)
images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
probs = model.predict(images, verbose=0)
top = keras_vit.decode_predictions(probs, top=1)  # the class names shipped as package data
model.save("m.keras")
back = keras.saving.load_model("m.keras")
print(json.dumps({
    "keras_vit": keras_vit.__file__, "backend": keras.backend.backend(),
    "reload": float(np.abs(back.predict(images, verbose=0) - probs).max()),
    "label": top[0][0][1], "sum": float(probs.sum()),
    "loaded": sorted({m.partition(".")[0] for m in sys.modules} & {"tensorflow", "torch"}),
}))
"""


def _requirements(dist_requires, extras):
    from packaging.requirements import Requirement

    for text in dist_requires or ():
        requirement = Requirement(text)
        if requirement.marker is None or any(
                requirement.marker.evaluate({"extra": extra}) for extra in ("", *extras)):
            yield requirement


def declared_closure(extras):
    """{distribution name: Distribution} of what the project declares for `extras`, and what
    those require, as installed in this environment."""
    from packaging.utils import canonicalize_name

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    pending = [*project["dependencies"]]
    for extra in extras:
        pending += project["optional-dependencies"][extra]
    pending = list(_requirements(pending, ()))
    found = {}
    while pending:
        requirement = pending.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        dist = metadata.distribution(requirement.name)
        found[name] = dist
        pending += list(_requirements(dist.requires, requirement.extras))
    return found


def lend(dists, folder):
    """Links each distribution's top-level files and folders (packages, modules, .dist-info,
    bundled libraries) into `folder`."""
    folder.mkdir()
    for dist in dists:
        site = dist.locate_file("")
        for top in {f.parts[0] for f in dist.files or () if f.parts[0] not in ("..", "__pycache__")}:
            target = folder / top
            if not target.exists() and os.path.exists(os.path.join(site, top)):
                target.symlink_to(os.path.join(site, top))


@once_on("jax")  # one extra, one backend: it installs the project, what it checks is the install
def test_documented_install_without_tensorflow_in_a_clean_venv(tmp_path):
    closure = declared_closure([EXTRA])
    assert "tensorflow" not in closure and "keras" in closure and "jax" in closure
    build = [metadata.distribution(name) for name in ("setuptools", "wheel")]
    lend([*closure.values(), *build], tmp_path / "lent")

    venv = tmp_path / "venv"
    base_python = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_python, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    python = venv / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "lent.pth"), "w") as f:
        f.write(str(tmp_path / "lent") + "\n")

    source = tmp_path / "keras-vit"  # a clone's files, without build outputs
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    for package in ("keras_vit", "tf_data", "applications"):
        shutil.copytree(os.path.join(ROOT, package), source / package,
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))

    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV", "KERAS_VIT"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               PIP_NO_INPUT="1", KERAS_BACKEND="jax", TF_CPP_MIN_LOG_LEVEL="3")
    # The README's line, offline: no index, and the build backend from the lent set.
    install = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index",
               "--no-build-isolation", "--no-compile", "-c", "constraints.txt", f".[{EXTRA}]"]
    done = subprocess.run(install, cwd=source, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Successfully installed keras3-vit-" in done.stdout, done.stdout[-2000:]

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    done = subprocess.run([python, "-c", CHECK], cwd=run_dir, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["keras_vit"].startswith(site), result  # the installed copy, not the checkout
    assert result["backend"] == "jax" and result["loaded"] == []
    assert result["reload"] == 0.0 and result["sum"] == pytest.approx(2.0, abs=1e-4)
    assert isinstance(result["label"], str) and result["label"]

    # The command is installed; without TensorFlow it says what to install, in one line.
    done = subprocess.run([venv / "bin" / "keras-vit", "train", "--dataset", "digits"],
                          cwd=run_dir, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert 'pip install -c constraints.txt ".[tf,jax]"' in done.stderr
