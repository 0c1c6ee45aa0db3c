"""The throughput benchmark's arithmetic: FLOP counts against published figures, MFU, peaks.

Speed itself is measured by running `benchmarks/throughput.py`, never asserted here.
"""

import importlib.util
import os

import pytest

from conftest import once

HERE = os.path.dirname(os.path.abspath(__file__))


def _benchmark_module(name):
    path = os.path.join(os.path.dirname(HERE), "benchmarks", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def throughput():
    return _benchmark_module("throughput")


@once
@pytest.mark.parametrize("variant, published_gmacs", [
    # DeiT (Touvron et al. 2021), Table 1: the ViT architectures at 224 px, in GFLOPs as
    # multiply-accumulates (DeiT-Ti/S/B are ViT-Ti/S/B without distillation token).
    ("ViTTi16", 1.3), ("ViTS16", 4.6), ("ViTB16", 17.6),
])
def test_forward_flops_match_the_published_counts(throughput, variant, published_gmacs):
    flops = throughput.forward_flops(throughput.arch_of(variant), 224)
    assert round(flops / 2 / 1e9, 1) == published_gmacs


@once
def test_class_row_shortcut_removes_the_last_blocks_other_rows(throughput):
    arch = throughput.arch_of("ViTB16")
    t, d, m = 197, 768, 3072
    # Rows 1..T-1 of the last block: their attention (logits and values), output projection
    # and MLP; the fused QKV product still runs over every token.
    saved = (t - 1) * (2 * 2 * t * d + 2 * d * d + 2 * 2 * d * m)
    full = throughput.forward_flops(arch, 224)
    assert full - throughput.forward_flops(arch, 224, last_block_rows=1) == saved


@once
def test_mfu_and_data_sheet_peaks(throughput):
    assert throughput.peak_tflops("NVIDIA H100 PCIe", "bfloat16") == 756.0
    assert throughput.peak_tflops("NVIDIA H100 80GB HBM3", "bfloat16") == 989.4
    assert throughput.peak_tflops("NVIDIA H200", "float32") == 66.9
    assert throughput.peak_tflops("cpu", "float32") is None
    # 1000 img/s of a 35.1 GFLOP (B/16) forward on a 989.4 TFLOP/s device: 3.55%.
    assert throughput.mfu(1000, 35.1e9, 989.4) == pytest.approx(0.035476, rel=1e-4)
    assert throughput.mfu(1000, 35.1e9, None) is None


@once
@pytest.mark.parametrize("last_block_rows", [None, 1])
def test_step_products_are_the_counted_flops(throughput, last_block_rows):
    """The products-only bound times exactly the FLOPs the table counts: the forward products
    sum to `forward_flops`; training adds both operands' gradients of each, except the pixels'
    (ViT-S/16, batch 2: the patch embedding is 196 x 768 by 768 x 384 per image)."""
    arch = throughput.arch_of("ViTS16")
    forward = throughput.forward_flops(arch, 224, last_block_rows=last_block_rows)
    infer = throughput.step_products(arch, 224, 2, "infer", last_block_rows=last_block_rows)
    train = throughput.step_products(arch, 224, 2, "train", last_block_rows=last_block_rows)
    assert throughput.products_flops(infer) == 2 * forward
    pixels_gradient = 2 * (2 * 196 * 384 * 768)
    assert throughput.products_flops(train) == 3 * 2 * forward - pixels_gradient
    # every gradient product has the shapes of one: G (m x n) @ B^T (n x k) -> (m x k).
    assert all(a[-1] == b[-2] for a, b in train)


@once  # the input-pipeline benchmark runs in its own process on TensorFlow's graph
def test_input_pipeline_benchmark_runs(tmp_path):
    """benchmarks/input_pipeline.py end to end at toy sizes, on both JPEG sets: every contender
    yields batches and the table and JSON come out (speed itself is in benchmarks/RESULTS.md,
    never asserted)."""
    import json
    import subprocess
    import sys

    out = tmp_path / "result.json"
    done = subprocess.run(
        [sys.executable, os.path.join(os.path.dirname(HERE), "benchmarks", "input_pipeline.py"),
         "--images", "8", "--batch-size", "2", "--image-size", "16", "--batches", "1",
         "--warmup", "1", "--repeats", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=180,
        # Keras' augmentation layers run inside tf.data: the TensorFlow backend, as documented.
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = result["rows"]
    names = {(r["contender"], r["workload"], r["data"], r["set"]) for r in rows}
    assert ("keras-vit", "train", "records", "synthetic") in names
    assert ("PIL processes", "eval", "folder", "crops") in names
    assert len(rows) == 32 and all(r["img_s"] > 0 for r in rows)  # 16 per JPEG set
    assert set(result["sets"]) == {"crops", "synthetic"}
    assert "| synthetic | train | folder | keras-vit |" in done.stdout


@once
def test_tf_graph_ops_compare_names_each_difference(tmp_path, capsys):
    """benchmarks/tf_graph_ops.py --compare: equal histograms exit 0; a changed op is listed
    with both counts and exits 1 (the graphs themselves are TensorFlow's; run by hand)."""
    import json

    module = _benchmark_module("tf_graph_ops")
    old = {"train": {"MatMul|transpose_a=b: false|inputs=2": 4, "Const|inputs=0": 3},
           "infer": {"MatMul|transpose_a=b: false|inputs=2": 2}}
    new = {"train": {"MatMul|transpose_a=b: false|inputs=2": 5, "Const|inputs=0": 3},
           "infer": {"MatMul|transpose_a=b: false|inputs=2": 2}}
    for name, value in (("old", old), ("same", old), ("new", new)):
        (tmp_path / f"{name}.json").write_text(json.dumps(value))
    assert module.main(["--compare", str(tmp_path / "old.json"), str(tmp_path / "same.json")]) == 0
    capsys.readouterr()
    assert module.main(["--compare", str(tmp_path / "old.json"), str(tmp_path / "new.json")]) == 1
    out = capsys.readouterr().out
    assert "train: 7 ops -> 8; 1 kinds differ" in out and "infer: 2 ops -> 2; 0 kinds differ" in out
    assert "    4 ->     5  MatMul|transpose_a=b: false|inputs=2" in out
