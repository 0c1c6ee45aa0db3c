"""The ViT builder: variant sizes, the keras.applications arguments, saving, bad input."""

import numpy as np
import pytest

import keras

import keras_vit
from conftest import BACKEND, once_on
from numpy_vit import make_official_params

# Parameter counts at 224 px with 1000 classes (the paper's table / official configs).
PARAMS = {
    "ViTTi16": 5_717_416,
    "ViTS16": 22_050_664,
    "ViTS32": 22_878_952,
    "ViTB8": 86_576_872,
    "ViTB16": 86_567_656,
    "ViTB32": 88_224_232,
    "ViTL16": 304_326_632,
    "ViTL32": 306_535_400,
    "ViTH14": 632_045_800,
    "ViTR50B16": 98_659_112,
}

SMALL = dict(image_size=32, patch_size=8, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=64)


# A variant's shapes do not depend on the backend, and building one takes seconds (the 300M+
# parameter ones 10-20 s, over a minute each on PyTorch): each is built once per `make test`,
# the big ones on TensorFlow, the others spread over the three legs.
BIG = {"ViTL16", "ViTL32", "ViTH14"}
_LEGS = ("tensorflow", "jax", "torch")


def _built_on(variant, index):
    return once_on("tensorflow" if variant in BIG else _LEGS[index % 3])


@pytest.mark.parametrize(
    "variant", [pytest.param(v, marks=_built_on(v, i)) for i, v in enumerate(sorted(PARAMS))])
def test_variant_parameter_count_equals_the_table(variant):
    model = getattr(keras_vit, variant)()
    assert model.count_params() == PARAMS[variant]
    keras.backend.clear_session()


def test_variant_table_is_exported_with_every_constructor():
    assert sorted(keras_vit.VARIANTS) == sorted(PARAMS)


@pytest.mark.parametrize(
    "kwargs, shape",
    [
        (dict(include_top=False), (None, 17, 32)),
        (dict(include_top=False, pooling="token"), (None, 32)),
        (dict(include_top=False, pooling="avg"), (None, 32)),
        (dict(include_top=False, pooling="max"), (None, 32)),
        (dict(include_top=False, classifier="gap"), (None, 16, 32)),
        (dict(classes=7), (None, 7)),
        (dict(classes=7, representation_size=16), (None, 7)),
        (dict(input_shape=(40, 24, 1), classes=3), (None, 3)),
    ],
)
def test_output_shapes(kwargs, shape):
    assert keras_vit.ViT(**{**SMALL, **kwargs}).output_shape == shape


def test_head_starts_at_zero_and_softmax_is_uniform(rng):
    model = keras_vit.ViT(**SMALL, classes=5)
    head = model.get_layer("head")
    assert not np.any(keras.ops.convert_to_numpy(head.kernel))
    probs = model.predict(rng.uniform(0, 255, (2, 32, 32, 3)), verbose=0)
    np.testing.assert_allclose(probs, 0.2, rtol=1e-6)


def test_input_tensor_is_used_as_the_model_input():
    tensor = keras.Input((32, 32, 3))
    model = keras_vit.ViT(**SMALL, input_tensor=tensor, classes=4)
    assert model.inputs[0] is tensor


def test_pooling_token_equals_the_token_row(rng):
    model = keras_vit.ViT(**SMALL, include_top=False)
    pooled = keras_vit.ViT(**SMALL, include_top=False, pooling="token")
    pooled.set_weights(model.get_weights())
    x = rng.uniform(0, 255, (2, 32, 32, 3))
    np.testing.assert_allclose(pooled.predict(x, verbose=0), model.predict(x, verbose=0)[:, 0],
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, last_rows",
    [
        (dict(), 1),
        (dict(position_embedding="relative", representation_size=16), 1),
        (dict(include_top=False, pooling="token"), 1),
        (dict(include_top=False), 17),  # the token sequence is the output
        (dict(include_top=False, pooling="avg"), 17),
        (dict(classifier="gap"), 16),  # no class token: every row is averaged
    ],
)
def test_last_block_computes_only_the_class_row_when_only_it_is_read(kwargs, last_rows, rng):
    model = keras_vit.ViT(**SMALL, **kwargs, classifier_activation=None)
    assert model.get_layer("encoderblock_1").output.shape == (None, last_rows, 32)
    full = keras_vit.ViT(**SMALL, **kwargs, classifier_activation=None, last_block_class_token_only=False)
    assert full.get_layer("encoderblock_1").output.shape[1] == 16 + (kwargs.get("classifier") != "gap")
    weights = [rng.standard_normal(w.shape).astype("float32") * 0.3 for w in model.weights]
    model.set_weights(weights)
    full.set_weights(weights)
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(model.predict(x, verbose=0), full.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


def test_last_block_shortcut_trains_like_the_full_block(rng):
    models = [keras_vit.ViT(**SMALL, classes=5, classifier_activation=None, dropout_rate=0.0,
                            last_block_class_token_only=flag) for flag in (True, False)]
    weights = [rng.standard_normal(w.shape).astype("float32") * 0.3 for w in models[0].weights]
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = np.array([0, 1, 2, 3])
    for model in models:
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(0.1),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.train_on_batch(x, y)
    for fast, full in zip(*(m.get_weights() for m in models)):
        np.testing.assert_allclose(fast, full, rtol=1e-4, atol=1e-5)
    # Every weight of the last block got a gradient, except the key bias, whose gradient is
    # zero in exact arithmetic (it adds the same q.b to every logit of a query's row).
    moved = {w.path: np.abs(keras.ops.convert_to_numpy(w) - start).max()
             for w, start in zip(models[0].weights, weights)}
    assert all(v > 0 for path, v in moved.items() if not path.endswith("key_bias")), moved


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(classifier="gap", position_embedding="learned_2d"),
        dict(position_embedding="relative", dropout_rate=0.1, stochastic_depth_rate=0.1),
        dict(position_embedding="none", representation_size=16, gelu_approximate=False),
        dict(resnet_num_layers=(1, 1), resnet_width_factor=0.5, patch_size=1, image_size=32),
    ],
    ids=["token", "gap-2d", "relative", "none-prelogits", "hybrid"],
)
def test_model_round_trips_through_keras_file(kwargs, tmp_path, rng):
    model = keras_vit.ViT(**{**SMALL, **kwargs}, classes=6, classifier_activation=None)
    # Non-zero head so the comparison is meaningful.
    model.get_layer("head").kernel.assign(rng.standard_normal(model.get_layer("head").kernel.shape))
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    clone = keras.Model.from_config(model.get_config())
    assert clone.count_params() == model.count_params()


def test_weights_h5_round_trip_and_loading_through_weights_argument(tmp_path, rng):
    model = keras_vit.ViT(**SMALL, classes=6, classifier_activation=None)
    model.get_layer("head").kernel.assign(rng.standard_normal((32, 6)))
    path = str(tmp_path / "vit.weights.h5")
    model.save_weights(path)
    loaded = keras_vit.ViT(**SMALL, classes=6, classifier_activation=None, weights=path)
    x = rng.uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image_size=30), "Image height 30 is not divisible by the patch size 8"),
        (dict(image_size=(32, 36)), "Image width 36 is not divisible by the patch size 8"),
        (dict(hidden_size=30), "hidden_size 30 is not divisible by num_heads 4"),
        (dict(classifier="cls"), "Unknown classifier 'cls'"),
        (dict(position_embedding="sinusoidal"), "Unknown position_embedding 'sinusoidal'"),
        (dict(include_top=False, pooling="mean"), "Unknown pooling 'mean'"),
        (dict(include_top=False, pooling="token", classifier="gap"), "needs a class token"),
        (dict(classes=0), "`classes` must be a positive int"),
        (dict(patch_size=(8, 0)), "`patch_size` must hold positive ints"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        keras_vit.ViT(**{**SMALL, **kwargs})


def _small_checkpoint(tmp_path, rng, name="ckpt.npz", **kwargs):
    params = make_official_params(rng, **kwargs)
    path = tmp_path / name
    np.savez(path, **params)
    return str(path), params


def _snapshot(model):
    return [np.array(keras.ops.convert_to_numpy(w)) for w in model.weights]


def _assert_unchanged(model, before):
    for value, after in zip(before, _snapshot(model)):
        np.testing.assert_array_equal(value, after)


@pytest.mark.parametrize(
    "checkpoint, model_kwargs, message",
    [
        (dict(layers=3), dict(), r"unexpected key 'Transformer/encoderblock_2/.*deeper than the model"),
        (dict(layers=1), dict(), r"missing key 'Transformer/encoderblock_1/LayerNorm_0/scale'"),
        (dict(mlp=48), dict(), r"'Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel' has shape \(32, 48\) in the checkpoint, model expects \(32, 64\)"),
        (dict(representation_size=8), dict(), r"unexpected key 'pre_logits/kernel'.*representation_size"),
        (dict(classifier="gap"), dict(), r"missing key 'cls'"),
        (dict(), dict(input_shape=(32, 32, 1)), r"checkpoint takes 3-channel inputs but the model takes 1"),
        (dict(classes=5), dict(), r"'head/kernel' has shape \(32, 5\) in the checkpoint, model expects \(32, 10\)"),
    ],
)
def test_mismatched_checkpoint_names_the_key_and_changes_nothing(checkpoint, model_kwargs, message, tmp_path, rng):
    path, _ = _small_checkpoint(tmp_path, rng, **checkpoint)
    model = keras_vit.ViT(**{**SMALL, **model_kwargs}, classes=10)
    before = _snapshot(model)
    with pytest.raises(ValueError, match=message):
        keras_vit.load_weights(model, path)
    _assert_unchanged(model, before)


def test_include_top_false_ignores_the_checkpoint_head(tmp_path, rng):
    path, params = _small_checkpoint(tmp_path, rng, representation_size=8)
    model = keras_vit.ViT(**SMALL, include_top=False, weights=path)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(model.get_layer("encoder_norm").gamma),
        params["Transformer/encoder_norm/scale"],
    )


def test_not_a_vit_checkpoint_and_corrupt_files(tmp_path, rng):
    model = keras_vit.ViT(**SMALL, classes=10)
    before = _snapshot(model)
    other = tmp_path / "resnet.npz"
    np.savez(other, **{"conv1/kernel": np.zeros((3, 3, 3, 8), "float32")})
    with pytest.raises(ValueError, match="is not a ViT checkpoint: it has no 'embedding/kernel'"):
        keras_vit.load_weights(model, str(other))
    path, _ = _small_checkpoint(tmp_path, rng)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(open(path, "rb").read()[:1000])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        keras_vit.load_weights(model, str(truncated))
    with pytest.raises(ValueError, match="does not exist"):
        keras_vit.load_weights(model, str(tmp_path / "missing.npz"))
    bad_h5 = tmp_path / "bad.weights.h5"
    bad_h5.write_bytes(b"not an hdf5 file")
    with pytest.raises(ValueError, match="Cannot load"):
        keras_vit.load_weights(model, str(bad_h5))
    _assert_unchanged(model, before)


# ViT-Ti/16 at 224 px: 1.1 G forward multiply-adds per image in its blocks, a CPU train step
# bound by its matrix products; SMALL: 2.6 M.
TI16 = dict(image_size=224, patch_size=16, hidden_size=192, num_layers=12, num_heads=3,
            mlp_dim=768)


def _xla_per_step(model, monkeypatch):
    """{step: whether Keras wraps it in an XLA-compiled `tf.function`}, for the train, test
    and predict steps as `make_*_function` builds them now."""
    import tensorflow as tf

    jit_compile_arguments = []
    function = tf.function

    def spy(*args, **kwargs):
        jit_compile_arguments.append(bool(kwargs.get("jit_compile")))
        return function(*args, **kwargs)

    seen = {}
    with monkeypatch.context() as patch:
        patch.setattr(tf, "function", spy)
        for step in ("train", "test", "predict"):
            jit_compile_arguments.clear()
            getattr(model, f"make_{step}_function")(force=True)
            seen[step] = any(jit_compile_arguments)
    return seen


@pytest.mark.skipif(BACKEND != "tensorflow", reason="the choice is TensorFlow's (JAX: always XLA)")
@pytest.mark.parametrize(
    "config, jit_compile, xla",
    [(TI16, "auto", False), (SMALL, "auto", True), (TI16, True, True), (TI16, False, False)],
    ids=["large-auto", "small-auto", "large-xla", "large-no-xla"])
def test_auto_jit_compile_on_a_tensorflow_cpu(config, jit_compile, xla, monkeypatch):
    """"auto" compiles every step with XLA unless the model is large enough for its CPU steps
    to be bound by matrix products (then TensorFlow's oneDNN kernels win); an explicit choice
    applies to every step; "auto" is what the model saves; setting `model.jit_compile` is an
    explicit choice."""
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        pytest.skip("on a GPU every step compiles with XLA")
    model = keras_vit.ViT(**config)
    if jit_compile == "auto":  # Keras' default holds before `compile` too
        assert _xla_per_step(model, monkeypatch) == {"train": xla, "test": xla, "predict": xla}
    model.compile(optimizer="adam", loss="mse", jit_compile=jit_compile)
    assert _xla_per_step(model, monkeypatch) == {"train": xla, "test": xla, "predict": xla}
    assert model.jit_compile == xla  # what "auto" resolved to
    assert model.get_compile_config()["jit_compile"] == jit_compile
    for choice in (not xla, xla):
        model.jit_compile = choice
        assert _xla_per_step(model, monkeypatch) == {
            "train": choice, "test": choice, "predict": choice}
        assert model.jit_compile == choice  # building the steps left the user's choice alone


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute is TensorFlow's")
def test_auto_jit_compile_is_off_under_a_tf_distribute_strategy(monkeypatch):
    """As Keras decides for its own models: a model created in a strategy's scope compiles no
    step with XLA on "auto" (under MirroredStrategy over two devices XLA's train step fails:
    examples/finetune_mirrored.py in tests/test_examples.py runs that case)."""
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        pytest.skip("the CPU test: small-auto compiles with XLA outside a strategy")
    with tf.distribute.MirroredStrategy(["/cpu:0"]).scope():
        model = keras_vit.ViT(**SMALL)  # XLA on "auto" outside a strategy (test above)
        model.compile(optimizer="adam", loss="mse")
    assert _xla_per_step(model, monkeypatch) == {"train": False, "test": False, "predict": False}
    assert model.jit_compile is False
    assert model.get_compile_config()["jit_compile"] == "auto"


def test_a_saved_compiled_model_loads_compiled_with_its_optimizer_state(tmp_path, rng):
    """`VisionTransformer` overrides `compile`, which makes Keras skip recompiling on load
    unless the model handles `compile_from_config` itself."""
    import warnings

    model = keras_vit.ViT(**SMALL, classes=3)
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy")
    x = rng.uniform(0, 255, (4, 32, 32, 3)).astype("float32")
    y = np.array([0, 1, 2, 0])
    model.train_on_batch(x, y)
    model.save(tmp_path / "m.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.compiled and loaded.get_compile_config()["jit_compile"] == "auto"
    assert int(keras.ops.convert_to_numpy(loaded.optimizer.iterations)) == 1
    for saved, restored in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(restored),
                                      keras.ops.convert_to_numpy(saved))
    np.testing.assert_allclose(loaded.train_on_batch(x, y), model.train_on_batch(x, y), rtol=1e-5)
