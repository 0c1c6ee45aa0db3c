"""Distributed training on one host: the ViT layout map, `--strategy` checks, and
several devices in one process (TensorFlow MirroredStrategy over two logical
CPUs; JAX DataParallel and a 2x2 ModelParallel mesh over four forced host
devices) against the same program on one device.

The engine tests run only under their own backend (KERAS_BACKEND), in a
subprocess that sets up the devices before TensorFlow/JAX start.
"""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_vit
from applications import cli, distributed
from applications.options import UsageError

sys.path.insert(0, os.path.dirname(__file__))
from distributed_worker import QUIET, ROOT, load  # noqa: E402

BACKEND = keras.backend.backend()
ARCH = dict(image_size=8, patch_size=2, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32)
# A small ViT on digits; no dropout or augmentation randomness; SGD with a
# global-norm clip that is active (without reduce_gradients_before_clipping,
# MirroredStrategy's loss after 8 steps is 6e-3 off, relative), kernel-only weight decay
# and layer decay (keras_vit.optimizers.GroupedOptimizer: each strategy must apply them
# as one device does).
TINY = ["--dataset", "digits", "--hidden-size", "16", "--num-layers", "1", "--num-heads", "2",
        "--mlp-dim", "32", "--dropout-rate", "0", "--crop-min-area", "1", "--optimizer", "sgd",
        "--lr", "1", "--clipnorm", "0.2", "--weight-decay", "0.01", "--layer-decay", "0.5",
        "--verbose", "0"]


def only(engine):
    return pytest.mark.skipif(BACKEND != engine,
                              reason=f"runs on the {engine} backend; this run is {BACKEND}")


def mesh(shape=(2, 2)):
    n = shape[0] * shape[1]
    return keras.distribution.DeviceMesh(shape, ("batch", "model"),
                                         devices=[f"cpu:{i}" for i in range(n)])


# -- the library's layout map (any backend) ------------------------------------------------

def test_layout_map_shards_heads_and_mlp_of_every_block():
    model = keras_vit.ViT(**ARCH, classes=10)
    lmap = keras_vit.layout_map(model, mesh())
    sharded = keras_vit.distribution.sharded_paths(model, lmap)
    expected = {}
    for i in range(ARCH["num_layers"]):
        att = f"encoderblock_{i}/MultiHeadDotProductAttention_1"
        for name in ("query", "key", "value"):
            expected[f"{att}/{name}_kernel"] = (None, "model", None)
            expected[f"{att}/{name}_bias"] = ("model", None)
        expected[f"{att}/out_kernel"] = ("model", None, None)
        mlp = f"encoderblock_{i}/MlpBlock_3"
        expected[f"{mlp}/Dense_0/kernel"] = (None, "model")
        expected[f"{mlp}/Dense_0/bias"] = ("model",)
        expected[f"{mlp}/Dense_1/kernel"] = ("model", None)
    assert sharded == expected
    # Everything else is replicated: embedding, LayerNorms, output biases, head.
    assert lmap["embedding/kernel"] is None and lmap["head/kernel"] is None
    assert lmap["encoderblock_0/MultiHeadDotProductAttention_1/out_bias"] is None


def test_layout_map_from_arch_equals_from_model_and_shards_embedding_on_request():
    model = keras_vit.ViT(**ARCH, classes=10)
    from_arch = keras_vit.layout_map(ARCH, mesh(), shard_embedding=True)
    from_model = keras_vit.layout_map(model, mesh(), shard_embedding=True)
    a = keras_vit.distribution.sharded_paths(model, from_arch)
    assert a == keras_vit.distribution.sharded_paths(model, from_model)
    assert a["embedding/kernel"] == (None, None, None, "model")
    assert a["embedding/pos_embedding"] == (None, None, "model")
    assert a["embedding/cls"] == (None, None, "model")
    assert len(a) == 2 * 10 + 4


def test_layout_map_rejects_sizes_the_model_axis_does_not_divide():
    with pytest.raises(ValueError, match="num_heads=3 is not divisible by the 2-way 'model'"):
        keras_vit.layout_map(dict(ARCH, num_heads=3, hidden_size=24), mesh())
    with pytest.raises(ValueError, match="mlp_dim=33"):
        keras_vit.layout_map(dict(ARCH, mlp_dim=33), mesh())
    with pytest.raises(ValueError, match="no 'model' axis"):
        keras_vit.layout_map(ARCH, keras.distribution.DeviceMesh((4,), ("batch",),
                                                                 devices=["cpu:0"] * 4))
    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no TransformerBlock"):
        keras_vit.layout_map(plain, mesh())


def test_device_mesh_shape_inference_and_errors():
    devices = [f"cpu:{i}" for i in range(4)]
    assert keras_vit.distribution.device_mesh((2, -1), devices).shape == (2, 2)
    assert keras_vit.distribution.device_mesh(None, devices).shape == (4, 1)
    with pytest.raises(ValueError, match=r"needs 6 devices; there are 4"):
        keras_vit.distribution.device_mesh((3, 2), devices)


# -- --strategy flags (any backend) --------------------------------------------------------

def test_strategy_flags_parse_and_stay_out_of_the_run_config():
    args = cli.build_parser().parse_args(
        ["train", "--strategy", "model_parallel", "--mesh-shape", "2,2", "--shard-embedding",
         "true", "--job-addresses", "10.0.0.1:1234", "--num-processes", "1", "--process-id",
         "0", "--lr", "0.1"])
    explicit = {k: v for k, v in vars(args).items() if k != "command"}
    options = distributed.Options.pop_from(explicit)
    assert options == distributed.Options("model_parallel", "10.0.0.1:1234", 1, 0, (2, 2), True)
    assert explicit == {"lr": 0.1}  # nothing per-process reaches config.json
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["train", "--mesh-shape", "4"])


@pytest.mark.parametrize("strategy", ["mirrored", "data_parallel", "ddp"])
def test_strategy_of_another_engine_is_a_usage_error(strategy, tmp_path, capsys):
    engine = distributed.STRATEGIES[strategy]
    if engine == BACKEND:
        pytest.skip(f"{strategy} runs on this backend")
    code = cli.main(["train", "--output", str(tmp_path / "run"), "--strategy", strategy, *TINY])
    err = capsys.readouterr().err
    assert code == cli.EXIT_USAGE
    assert f"runs on the {engine} backend, but KERAS_BACKEND is {BACKEND}" in err
    assert f"set KERAS_BACKEND={engine}" in err
    assert not (tmp_path / "run" / "config.json").exists()


MISSING_CLUSTER = {
    "tensorflow": (["--strategy", "multi_worker"], "needs TF_CONFIG, or --job-addresses"),
    "jax": (["--strategy", "data_parallel", "--num-processes", "2", "--process-id", "0"],
            "need the coordinator: --job-addresses"),
    "torch": (["--strategy", "ddp", "--num-processes", "2", "--job-addresses", "127.0.0.1:9"],
              "needs its --process-id in 0..1"),
}


def test_incomplete_cluster_flags_are_usage_errors_not_hangs(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for name in ("KERAS_DISTRIBUTION_JOB_ADDRESSES", "KERAS_DISTRIBUTION_PROCESS_ID",
                 "RANK", "MASTER_ADDR"):
        monkeypatch.delenv(name, raising=False)
    flags, message = MISSING_CLUSTER[BACKEND]
    code = cli.main(["train", "--output", str(tmp_path / "run"), *flags, *TINY])
    assert code == cli.EXIT_USAGE
    assert message in capsys.readouterr().err


def test_mesh_flags_without_model_parallel_are_rejected():
    with pytest.raises(UsageError, match="apply to --strategy model_parallel"):
        distributed.setup(distributed.Options("none", mesh_shape=(2, 2)))


# -- several devices in one process --------------------------------------------------------

def _run_script(script: str, env: dict, timeout: int) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, KERAS_BACKEND=BACKEND, **QUIET, **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script)], cwd=ROOT,
                          env=full_env, capture_output=True, text=True, timeout=timeout)


def _max_rel(a, b):
    return max(float(np.max(np.abs(x - y) / np.maximum(np.abs(y), 1e-3))) for x, y in zip(a, b))


@only("tensorflow")
def test_tf_mirrored_two_logical_cpus_equals_one_device(tmp_path):
    """Same program, same global batch (64), 8 steps: MirroredStrategy over 2 CPUs."""
    script = f"""
        import json, sys
        sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
        from distributed_worker import split_cpu, run_cli
        split_cpu(2)
        out = {str(tmp_path)!r}
        for strategy in ("none", "mirrored"):
            rc, model = run_cli(["train", "--output", f"{{out}}/{{strategy}}", "--strategy",
                                 strategy, "--batch-size", "64", "--steps", "8", *{TINY!r}],
                                f"{{out}}/{{strategy}}.npz")
            assert rc == 0, rc
            assert type(model.optimizer).__name__ == "GroupedOptimizer", model.optimizer
        """
    result = _run_script(script, {}, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]
    one, two = (json.loads((tmp_path / s / "metrics.json").read_text()) for s in ("none", "mirrored"))
    assert two["distribution"] == {"strategy": "mirrored", "processes": 1, "replicas": 2}
    loss1, loss2 = one["history"][-1]["loss"], two["history"][-1]["loss"]
    assert abs(loss2 - loss1) <= 1e-5 * abs(loss1), (loss1, loss2)
    for role in ("validation", "test"):  # the distributed evaluation loop
        for key in ("loss", "accuracy"):
            assert two[role][key] == pytest.approx(one[role][key], rel=1e-5)
    w1, w2 = load(tmp_path / "none.npz"), load(tmp_path / "mirrored.npz")
    init = load(tmp_path / "none.init.npz")
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(w1, init)) > 0.05  # it trained
    assert _max_rel(w2, w1) < 1e-4
    np.testing.assert_allclose(np.concatenate([w.ravel() for w in w2]),
                               np.concatenate([w.ravel() for w in w1]), rtol=1e-5, atol=1e-6)


@only("jax")
def test_jax_data_parallel_and_2x2_model_parallel_equal_one_device(tmp_path):
    """Four forced host devices: DataParallel, then a 2x2 (batch x model) mesh."""
    script = f"""
        import json, sys
        sys.path.insert(0, {os.path.join(ROOT, 'tests')!r})
        from distributed_worker import run_cli
        out = {str(tmp_path)!r}
        runs = {{"none": [], "data_parallel": [],
                 "model_parallel": ["--mesh-shape", "2,2", "--shard-embedding", "true"]}}
        for strategy, extra in runs.items():
            rc, model = run_cli(["train", "--output", f"{{out}}/{{strategy}}", "--strategy",
                                 strategy, "--batch-size", "64", "--steps", "8", *extra,
                                 *{TINY!r}], f"{{out}}/{{strategy}}.npz")
            assert rc == 0, rc
            assert type(model.optimizer).__name__ == "GroupedOptimizer", model.optimizer
            # (partition spec, devices, the shape one device holds) per variable
            shardings = {{v.path: [list(getattr(v.value.sharding, "spec", [])),
                                   len(v.value.sharding.device_set),
                                   list(v.value.addressable_shards[0].data.shape)]
                          for v in model.weights}}
            json.dump(shardings, open(f"{{out}}/{{strategy}}.sharding.json", "w"))
        """
    result = _run_script(script, {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
                         timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    metrics = {s: json.loads((tmp_path / s / "metrics.json").read_text())
               for s in ("none", "data_parallel", "model_parallel")}
    assert metrics["data_parallel"]["distribution"]["replicas"] == 4
    assert metrics["model_parallel"]["distribution"]["mesh"] == {"batch": 2, "model": 2}
    loss1 = metrics["none"]["history"][-1]["loss"]
    w1 = load(tmp_path / "none.npz")
    init = load(tmp_path / "none.init.npz")
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(w1, init)) > 0.05  # it trained
    for strategy in ("data_parallel", "model_parallel"):
        m = metrics[strategy]
        loss = m["history"][-1]["loss"]
        assert abs(loss - loss1) <= 1e-5 * abs(loss1), (strategy, loss1, loss)
        for role in ("validation", "test"):  # padded, sharded evaluation batches
            for key in ("loss", "accuracy", "top5_accuracy"):
                assert m[role][key] == pytest.approx(metrics["none"][role][key], rel=1e-5)
        w = load(tmp_path / f"{strategy}.npz")
        np.testing.assert_allclose(np.concatenate([x.ravel() for x in w]),
                                   np.concatenate([x.ravel() for x in w1]), rtol=1e-5, atol=1e-6)

    dp = json.loads((tmp_path / "data_parallel.sharding.json").read_text())
    mp = json.loads((tmp_path / "model_parallel.sharding.json").read_text())
    q = "encoderblock_0/MultiHeadDotProductAttention_1/query_kernel"
    # DataParallel: every variable whole on all four devices.
    assert dp[q][1] == 4 and dp[q][2] == [16, 2, 8]
    # ModelParallel 2x2: heads split over "model", each device holds half.
    assert mp[q][0][:2] == [None, "model"] and mp[q][2] == [16, 1, 8]
    assert mp["encoderblock_0/MultiHeadDotProductAttention_1/out_kernel"][2] == [1, 8, 16]
    assert mp["encoderblock_0/MlpBlock_3/Dense_0/kernel"][2] == [16, 16]
    assert mp["encoderblock_0/MlpBlock_3/Dense_1/kernel"][2] == [16, 16]
    assert mp["embedding/kernel"][2] == [2, 2, 3, 8]
    assert mp["encoderblock_0/LayerNorm_0/gamma"][2] == [16]  # replicated
    assert mp["head/kernel"][2] == [16, 10]
