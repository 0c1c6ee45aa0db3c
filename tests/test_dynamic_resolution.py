"""Any image size at run time: `ViT(..., input_shape=(None, None, 3))` (issue 31).

The reference for a model of any size called at h x w is a fixed-size model built at h x w from
the same checkpoint file, whose position embedding the NumPy loader resampled once (scipy zoom
or the NumPy antialiased bicubic); at the stored size the logits must be bit-equal.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_vit
from conftest import BACKEND, once, once_on
from keras_vit import analysis, checkpoint, resolution
from keras_vit.layers import position_resample
from numpy_vit import make_official_params, relative_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCH = dict(patch_size=8, hidden_size=32, num_layers=1, num_heads=4, mlp_dim=64)
POS = checkpoint.POS_EMBED_KEY
ANY = (None, None, 3)


def _run(model, images):
    """The model's outputs as NumPy: compiled on JAX (whose eager ops compile one by one for
    each new shape, seconds for a model), called directly elsewhere."""
    if BACKEND == "jax":
        return model.predict(images, verbose=0)
    return keras.tree.map_structure(keras.ops.convert_to_numpy, model(images))


def _checkpoint(tmp_path, name, rng, position_embedding="learned_1d", **kwargs):
    """An official-layout .npz (32 px, patch 8 unless a hybrid's), with 2-D tables if asked."""
    params = make_official_params(rng, image_size=32, hidden=32, layers=1, heads=4, mlp=64,
                                  **kwargs)
    if position_embedding == "learned_2d":
        del params[POS]
        for axis in ("_row", "_col"):
            params[POS + axis] = rng.normal(0, 0.1, (4, 16)).astype("float32")
    path = str(tmp_path / f"{name}.npz")
    np.savez(path, **params)
    return path


# name: (ViT arguments, checkpoint arguments, a size other than the stored 32x32). Together
# the cases cover the 1-D and 2-D learned embeddings, the class token and GAP, both
# resampling algorithms and the hybrid (benchmarks/dynamic_resolution.py --parity prints the
# same comparison for each separately).
CASES = {
    "learned_1d, class token, official": ({}, {}, (48, 24)),
    "learned_2d, GAP, bicubic": (
        {"position_embedding": "learned_2d", "classifier": "gap", "image_size": 32,
         "pos_embed_resample": "bicubic"},
        {"position_embedding": "learned_2d", "classifier": "gap"}, (24, 40)),
    "hybrid": ({"patch_size": 1, "resnet_num_layers": (), "resnet_width_factor": 0.5},
               {"patch": 1, "resnet": (), "resnet_width": 32}, (48, 36)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_any_size_logits_equal_a_fixed_model_built_at_that_size(case, tmp_path, rng):
    arch, ckpt_args, size = CASES[case]
    path = _checkpoint(tmp_path, "ckpt", rng, **ckpt_args)
    kwargs = {**ARCH, "classes": 10, "classifier_activation": None, "weights": path, **arch}
    stored = kwargs.pop("image_size", None)
    any_size = keras_vit.ViT(input_shape=ANY, image_size=stored, **kwargs)
    assert resolution.stored_image_size(any_size) == (32, 32)
    images = rng.uniform(0, 255, (2, *size, 3)).astype("float32")
    expected = _run(keras_vit.ViT(image_size=size, **kwargs), images)
    assert relative_error(_run(any_size, images), expected) < 1e-5
    # At the stored size nothing is resampled: the same logits to the bit (on JAX, whose
    # models each compile, for the first case: the other cases take the same path).
    if BACKEND == "jax" and not case.startswith("learned_1d"):
        return
    at_stored = keras_vit.ViT(image_size=stored, **kwargs)
    images = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_array_equal(_run(any_size, images), _run(at_stored, images))
    if case.startswith("learned_1d") and BACKEND != "jax":  # compiled too
        np.testing.assert_array_equal(any_size.predict(images, verbose=0),
                                      at_stored.predict(images, verbose=0))


@once
def test_resampling_in_the_graph_matches_the_numpy_loader():
    """Each algorithm against `checkpoint.resample_position_embedding` (scipy zoom order 1,
    the NumPy bicubic kernels), up, down, non-square; a 1-row axis; the identity exact."""
    rng = np.random.default_rng(0)
    posemb = rng.normal(size=(1, 1 + 7 * 7, 8)).astype("float32")
    assert position_resample.METHODS == checkpoint.POS_EMBED_RESAMPLE
    for method in position_resample.METHODS:
        for grid in ((7, 7), (3, 5), (12, 4), (1, 9), (14, 14)):
            got = keras.ops.convert_to_numpy(
                position_resample.resample_position_embedding(posemb, (7, 7), grid, 1, method))
            if grid == (7, 7):  # (where the DINOv2 code keeps its embedding, as here)
                np.testing.assert_array_equal(got, posemb)
                continue
            expected = checkpoint.resample_position_embedding(posemb, grid, 1, method)
            assert got.shape == expected.shape
            # float32 weights against float64 ones; the plain bicubic's lobes reach 4e-6.
            np.testing.assert_allclose(got, expected, rtol=0, atol=5e-6)


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's graphs of unknown shape")
def test_tensorflow_graph_of_unknown_size_keeps_the_stored_grid_bit_equal():
    """Traced without knowing the grid, the weights at the stored grid are exact 1.0 / 0.0."""
    import tensorflow as tf

    posemb = np.random.default_rng(0).normal(size=(1, 1 + 6 * 6, 8)).astype("float32")
    for method in ("official", "bicubic"):
        for jit_compile in (False, True):
            resample = tf.function(
                lambda g, m=method: position_resample.resample_position_embedding(
                    tf.constant(posemb), (6, 6), (g[0], g[1]), 1, m),
                input_signature=[tf.TensorSpec((2,), tf.int32)], jit_compile=jit_compile)
            same = resample(tf.constant([6, 6])).numpy()
            np.testing.assert_array_equal(same.view("int32"), posemb.view("int32"))
            np.testing.assert_allclose(
                resample(tf.constant([3, 9])).numpy(),
                checkpoint.resample_position_embedding(posemb, (3, 9), 1, method), atol=2e-6)


def _sized_batches(sizes, batch=4, classes=5):
    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return len(sizes)

        def __getitem__(self, i):
            r = np.random.default_rng(i)
            images = r.uniform(0, 255, (batch, *sizes[i], 3)).astype("float32")
            return images, r.integers(0, classes, (batch,))

    return Batches()


def test_fit_evaluate_predict_and_features_at_sizes_that_change_batch_to_batch(rng):
    """Remat on; another size each batch; evaluate equals the loss of the predictions; feature
    maps on the call's grid. (TensorFlow: steps without XLA, so that its second size runs the
    graph traced for any size, as `reduce_retracing` relaxes it.)"""
    model = keras_vit.ViT(image_size=32, input_shape=ANY, remat=True, classes=5, **ARCH)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
                  jit_compile=False if BACKEND == "tensorflow" else "auto")
    pos = model.get_layer("embedding").pos_embedding
    before = keras.ops.convert_to_numpy(pos)
    history = model.fit(_sized_batches([(32, 32), (16, 40)]), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert np.abs(keras.ops.convert_to_numpy(pos) - before).max() > 1e-4  # it trained

    data = _sized_batches([(48, 24)])
    images, labels = data[0]
    probs = model.predict(images, verbose=0)
    if BACKEND != "jax":  # (eager JAX: seconds per new shape) the model's own outputs
        np.testing.assert_allclose(keras.ops.convert_to_numpy(model(images)), probs, atol=1e-6)
    loss = -np.log(probs[np.arange(len(labels)), labels]).mean()
    assert model.evaluate(data, verbose=0) == pytest.approx(loss, rel=1e-5)

    # The token outputs without the class token, laid out on the call's grid.
    spatial = keras_vit.feature_extractor(model, blocks=-1, output="spatial", norm=True)
    tokens = keras_vit.feature_extractor(model, blocks=-1, norm=True)
    both = keras.Model(model.inputs, [spatial.output, tokens.output])
    grid, flat = _run(both, images[:2])
    assert grid.shape == (2, 6, 3, 32)
    np.testing.assert_array_equal(grid.reshape(2, -1, 32), flat[:, 1:])


def test_mixed_precision_resamples_in_float32(tmp_path, rng):
    path = _checkpoint(tmp_path, "ckpt", rng)
    images = rng.uniform(0, 255, (2, 48, 24, 3)).astype("float32")
    kwargs = dict(**ARCH, classes=10, classifier_activation=None, weights=path)
    reference = _run(keras_vit.ViT(image_size=(48, 24), **kwargs), images)
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        half = keras_vit.ViT(input_shape=ANY, **kwargs)
    finally:
        keras.config.set_dtype_policy(policy)
    assert half.get_layer("embedding").compute_dtype == "bfloat16"
    logits = _run(half, images)
    assert logits.dtype == np.float32
    assert relative_error(logits, reference) < 3e-2  # bfloat16's error against float32


def test_sizes_the_patch_does_not_divide_and_relative_embeddings_are_refused(rng):
    model = keras_vit.ViT(image_size=32, input_shape=ANY, classes=3, **ARCH)
    with pytest.raises(ValueError, match=r"height 36 is not divisible by the patch size 8"):
        model.predict(np.zeros((1, 36, 32, 3), "float32"), verbose=0)
    with pytest.raises(ValueError, match="relative.*needs a fixed image size"):
        keras_vit.ViT(input_shape=ANY, position_embedding="relative", **ARCH)
    with pytest.raises(ValueError, match="pass the images' image_size"):
        analysis.token_layout(model)


@once
def test_attention_analysis_on_the_call_grid_equals_a_fixed_models(tmp_path, rng):
    """Attention maps, rollout and mean attention distance of a model of any size at 48x24
    are those of the fixed model built at 48x24 from the same checkpoint."""
    path = _checkpoint(tmp_path, "ckpt", rng)
    kwargs = dict(**ARCH, classes=10, weights=path)
    any_size = keras_vit.ViT(input_shape=ANY, **kwargs)
    fixed = keras_vit.ViT(image_size=(48, 24), **kwargs)
    images = rng.uniform(0, 255, (2, 48, 24, 3)).astype("float32")
    layout = analysis.token_layout(any_size, (48, 24))
    assert layout == analysis.token_layout(fixed) == (6, 3, 1, (8.0, 8.0))
    attention = analysis.attention_maps(any_size, images)
    assert attention.shape == (1, 2, 4, 19, 19)
    np.testing.assert_allclose(attention, analysis.attention_maps(fixed, images), atol=1e-5)
    rows, cols, prefix, pixels = layout
    np.testing.assert_allclose(
        analysis.mean_attention_distance(attention, rows, cols, pixels, prefix),
        analysis.mean_attention_distance(analysis.attention_maps(fixed, images), rows, cols,
                                         pixels, prefix), rtol=1e-4)
    maps = analysis.rollout_maps(any_size, images, attention=attention)
    assert maps.shape == (2, 48, 24)
    np.testing.assert_allclose(maps, analysis.rollout_maps(fixed, images), atol=1e-4)
    heads = analysis.last_layer_class_attention(any_size, images, attention=attention)
    assert heads.shape == (2, 4, 48, 24)


def _any_size_model(rng, **kwargs):
    model = keras_vit.ViT(image_size=32, input_shape=ANY, **{**ARCH, "classes": 10, **kwargs})
    head = model.get_layer("head")
    head.kernel.assign(rng.standard_normal(head.kernel.shape).astype("float32"))
    return model


@once_on("tensorflow")
def test_saved_model_onnx_and_litert_keep_the_dynamic_axes(tmp_path, rng):
    """Exported once, each artifact runs at two sizes (LiteRT: `resize_tensor_input`, one
    image per call as its signature) and gives the Keras model's logits within 1e-4."""
    import onnxruntime
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    from keras_vit.export import export_models

    model = _any_size_model(rng, classifier_activation=None)
    paths = {"saved_model": str(tmp_path / "sm"), "onnx": str(tmp_path / "m.onnx"),
             "litert": str(tmp_path / "m.tflite")}
    export_models(model, paths)
    serving = tf.saved_model.load(paths["saved_model"])
    session = onnxruntime.InferenceSession(paths["onnx"])
    interpreter = Interpreter(model_path=paths["litert"])
    signature = interpreter.get_input_details()[0]
    assert list(signature["shape_signature"]) == [1, -1, -1, 3]
    for size in ((32, 32), (48, 24)):
        images = rng.uniform(0, 255, (2, *size, 3)).astype("float32")
        expected = model.predict(images, verbose=0)
        assert relative_error(serving.serve(tf.constant(images)).numpy(), expected) < 1e-4
        onnx = session.run(None, {session.get_inputs()[0].name: images})[0]
        assert relative_error(onnx, expected) < 1e-4
        interpreter.resize_tensor_input(signature["index"], (1, *size, 3))
        interpreter.allocate_tensors()
        interpreter.set_tensor(signature["index"], images[:1])
        interpreter.invoke()
        litert = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        assert relative_error(litert, expected[:1]) < 1e-4


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute is TensorFlow's")
def test_mirrored_strategy_trains_at_sizes_that_change_batch_to_batch():
    """A model built in a MirroredStrategy scope steps at two sizes and makes the same step as
    one built outside (one CPU replica here; tests/test_distributed.py runs two)."""
    import tensorflow as tf

    data = _sized_batches([(32, 32), (16, 40)])
    weights = []
    for strategy in (None, tf.distribute.MirroredStrategy(["/cpu:0"])):
        keras.utils.set_random_seed(0)
        with strategy.scope() if strategy else keras.utils.CustomObjectScope({}):
            model = keras_vit.ViT(image_size=32, input_shape=ANY, classes=5, **ARCH)
            model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False,
                          loss="sparse_categorical_crossentropy")
        model.fit(data, epochs=1, verbose=0, shuffle=False)
        weights.append(model.get_layer("embedding").pos_embedding.numpy())
    np.testing.assert_allclose(weights[1], weights[0], atol=1e-6)


@once
def test_predict_and_evaluate_keep_each_images_aspect_ratio(tmp_path, rng, capsys):
    """`--keep-aspect`: in a new process, `keras-vit predict` loads the saved model of any
    size and runs each image at its own aspect ratio (two sizes here); in this one,
    `evaluate` gives the loss of the same per-image predictions; a fixed model is refused."""
    from PIL import Image

    from applications import cli

    model = _any_size_model(rng, classes=2)
    model_path = tmp_path / "model.keras"
    model.save(model_path)
    root = tmp_path / "folder"
    shapes = [(20, 30), (30, 20), (24, 24)]  # (height, width): 32x48, 48x32, 32x32 at 32 px
    files, labels = [], []
    for label in range(2):
        (root / f"class_{label}").mkdir(parents=True)
        for i in range(6):
            files.append(root / f"class_{label}" / f"{i}.png")
            labels.append(label)
            pixels = rng.uniform(0, 255, (*shapes[i % 3], 3)).astype("uint8")
            Image.fromarray(pixels).save(files[-1])

    def expected_probs(path):
        image = np.asarray(Image.open(path).convert("RGB"), "float32")
        size = resolution.aspect_size(image.shape[:2], 32, multiple=8)
        import tensorflow as tf

        resized = tf.clip_by_value(tf.image.resize(image, size), 0, 255).numpy()
        return model.predict(resized[None], verbose=0)[0], size

    command = [os.path.join(os.path.dirname(sys.executable), "keras-vit"), "predict",
               "--model-path", str(model_path), "--keep-aspect", "--json", "--top", "3",
               str(files[0]), str(files[1])]
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(line) for line in done.stdout.splitlines()]
    sizes = set()
    for path, result in zip(files[:2], results):
        probs, size = expected_probs(path)
        sizes.add(size)
        top = result["top"][0]
        assert top["index"] == int(probs.argmax())
        assert top["probability"] == pytest.approx(float(probs.max()), rel=1e-4)
    assert sizes == {(32, 48), (48, 32)}

    capsys.readouterr()
    assert cli.main(["evaluate", "--model-path", str(model_path), "--dataset", str(root),
                     "--split", "test", "--keep-aspect", "--verbose", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    import tf_data

    split = tf_data.load_source(str(root)).split("test")
    losses = []
    for path, label in split.make(0, 1).as_numpy_iterator():
        probs, _ = expected_probs(path.decode())
        losses.append(-np.log(probs[label]))
    assert report["keep_aspect"] and report["examples"] == len(losses)
    assert report["loss"] == pytest.approx(np.mean(losses), rel=1e-4)

    fixed = tmp_path / "fixed.keras"
    keras_vit.ViT(image_size=32, classes=10, **ARCH).save(fixed)
    capsys.readouterr()
    assert cli.main(["predict", "--model-path", str(fixed), "--keep-aspect", str(files[0])]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "--keep-aspect needs a model of any image size" in error[0]


@once
def test_benchmark_dry_run_times_and_compares_logits(capsys):
    """benchmarks/dynamic_resolution.py's worker on a tiny model, in this process: timing rows
    for each size and the parity table's numbers (its own check of the logits)."""
    import importlib.util

    path = os.path.join(ROOT, "benchmarks", "dynamic_resolution.py")
    spec = importlib.util.spec_from_file_location("dynamic_resolution_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    results = []
    for extra in ([], ["--parity"]):
        capsys.readouterr()
        bench.main(["--dry-run", "--worker", "--rounds", "3", *extra])
        line = capsys.readouterr().out.splitlines()[-1]
        results.append(json.loads(line.removeprefix("RESULT ")))
    timing, parity = results
    steps = [r for r in timing["rows"] if r["kind"] == "step"]
    assert [tuple(r["size"]) for r in steps] == [(32, 32)] * 2 + [(24, 40)] * 2
    assert all(r["dynamic_ms"] > 0 and r["fixed_ms"] > 0 and r["ratio"] > 0 for r in steps)
    assert len(parity["rows"]) == 2 * len(bench.CASES)
    for row in parity["rows"]:
        assert row["relative"] < 1e-5 and row["relative_eager"] < 1e-5, row
        assert not row["stored"] or (row["bit_equal"] and row["bit_equal_eager"]), row
    table = bench.report([parity], parity_mode=True)
    assert table.count("(stored)") == len(bench.CASES)
