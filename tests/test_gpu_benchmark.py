"""The accelerator benchmark (benchmarks/gpu/run.sh) runs end to end, as on the GPU image.

A dry run on tiny shapes, on the CPU, with TensorFlow made unimportable as it is on the GPU
machine: every task runs and writes its row, so the script the GPU sessions depend on cannot
rot between them. Speed figures from a CPU dry run mean nothing and are not checked.
"""

import json
import os
import subprocess
import sys

from conftest import once

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@once
def test_dry_run_writes_every_row(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path),
           "PYTHONPATH": os.path.join(HERE, "no_tensorflow")}
    env.pop("KERAS_BACKEND", None)  # each task sets its own
    done = subprocess.run([os.path.join(ROOT, "benchmarks", "gpu", "run.sh"), "--dry-run",
                           "--check-steps", "8"], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads((tmp_path / "dry_run.json").read_text())
    env_row = next(r for r in rows if r.get("task") == "env")
    assert env_row["versions"]["keras"].startswith("3.")
    checks = {r["system"]: r for r in rows if r.get("task") == "check"}
    assert set(checks) == {"keras_vit-jax", "keras_vit-torch"}
    for check in checks.values():
        assert check["fp32_rel_error"] < 1e-4  # the float64 reference, as on the GPU
        assert check["bf16_rel_error"] < 5e-2
        assert check["finite"] and check["train_steps"] == 8
    # every kernel path against the reference, in the task's own process (one attention case
    # only in the dry run; all of tests/test_kernels.py on the GPU)
    kernel_rows = {r["system"]: r for r in rows if r.get("task") == "kernels"}
    assert set(kernel_rows) == {"keras_vit-jax", "keras_vit-torch"}
    for row in kernel_rows.values():
        assert row["passed"] and row["failed_tests"] == 0 and row["passed_tests"] >= 2, row
        assert row["device"] == "cpu" and row["kernels"]["attention"], row
    speed = {(r["system"], r["workload"]): r for r in rows if r.get("task") == "speed"}
    for system in ("keras_vit-jax", "keras_vit-torch", "keras_hub-jax", "hf", "hf-compile"):
        for workload in ("train", "infer"):
            row = speed[system, workload]
            assert "error" not in row, row
            assert row["img_per_s"] > 0 and row["mfu"] > 0 and row["dtype"] == "bfloat16"
    # timm is not installable beside this machine's CPU PyTorch; its row says why
    timm = speed["timm", "train"]
    assert "img_per_s" in timm or "timm" in timm["error"]
    table = (tmp_path / "table.md").read_text()
    assert "| keras_vit-jax | tiny | train |" in table
    assert "| keras_vit-torch | cpu |" in table  # the kernels table
    # kernel profiles of the training steps, JAX's and PyTorch's profilers
    for system in ("keras_vit-jax", "keras_vit-torch"):
        profile = speed[system, "train"]["profile_ms_per_step"]
        assert profile[0][0] == "TOTAL" and profile[0][1] > 0 and len(profile) > 3, profile
        assert f"profile, {system} tiny train" in table
