"""`keras_vit.optimizers`: kernel-only weight decay and per-variable learning rates (layer decay),
against NumPy written from the optimizers' update rules, on this backend, eagerly and compiled.
"""

import keras
import numpy as np
import pytest
from keras import ops

import keras_vit
from keras_vit.optimizers import GroupedOptimizer, decays_as_kernel, layer_decay
from conftest import BACKEND, once

TINY = dict(image_size=8, patch_size=4, hidden_size=8, num_layers=2, num_heads=2, mlp_dim=8,
            classes=3)
# The names a ViT's variables have, by whether kernel-only weight decay applies (hand-listed).
DECAYED = {"kernel", "query_kernel", "key_kernel", "value_kernel", "out_kernel"}
NOT_DECAYED = {"bias", "query_bias", "key_bias", "value_bias", "out_bias", "gamma", "beta", "cls",
               "pos_embedding"}
# Later ViTs' options (DINOv2 registers, DeiT-III LayerScale, SigLIP's attention-pooling probe):
# tokens and scales, never decayed, whatever their rank.
LATER = dict(num_register_tokens=2, layer_scale_init_value=0.1, classifier="map")
LATER_NOT_DECAYED = {"registers", "scale", "probe"}
# As other code names tokens and embeddings (a mask token, factorised position embeddings).
EXTRA_TOKENS = {"reg": (1, 4, 8), "mask_token": (1, 1, 8), "pos_embedding_row": (2, 4)}


def tiny_vit(**kwargs):
    keras.utils.set_random_seed(0)
    return keras_vit.ViT(**{**TINY, **kwargs})


@pytest.fixture(scope="module")
def vit():
    return tiny_vit()


def randomise(variables, seed=1):
    """Non-zero values everywhere (zero-initialised heads and tokens would hide a decay)."""
    rng = np.random.default_rng(seed)
    for v in variables:
        v.assign(rng.normal(size=v.shape).astype("float32") + 0.5)


def values(variables):
    return [np.array(ops.convert_to_numpy(v), dtype="float64") for v in variables]


# -- weight decay on kernels only --------------------------------------------------------

def test_zero_gradient_step_shrinks_each_kernel_by_lr_wd_and_nothing_else(vit):
    """SGD, Adam and AdamW with weight decay, a step with zero gradients: each kernel becomes
    v - v * wd * lr; everything else stays bit-equal (with weight_decay_on="all": shrinks)."""
    lr, wd = 0.1, 0.3
    extra = [keras.Variable(np.ones(shape, "float32"), name=name)
             for name, shape in EXTRA_TOKENS.items()]
    variables = vit.trainable_variables + extra
    assert {v.name for v in vit.trainable_variables} == DECAYED | NOT_DECAYED
    for make, weight_decay_on in (
            (lambda: keras.optimizers.SGD(lr, momentum=0.9, weight_decay=wd), "kernels"),
            (lambda: keras.optimizers.Adam(lr, weight_decay=wd), "kernels"),
            (lambda: keras.optimizers.AdamW(lr, weight_decay=wd), "kernels"),
            (lambda: keras.optimizers.AdamW(lr, weight_decay=wd), "all")):
        randomise(variables)
        before = values(variables)
        optimizer = GroupedOptimizer(make(), weight_decay_on=weight_decay_on)
        optimizer.apply([ops.zeros(v.shape) for v in variables], variables)
        for v, old, new in zip(variables, before, values(variables)):
            decays = weight_decay_on == "all" or v.name in DECAYED
            assert optimizer.decays(v) == decays, v.path
            # Keras' decoupled decay in float32: v - v * wd * lr.
            expected = old - old * np.float32(wd) * np.float32(lr) if decays else old
            np.testing.assert_allclose(new, expected, rtol=2e-7, atol=0, err_msg=v.path)
            if not decays:
                assert np.array_equal(new, old), v.path
            else:
                assert np.all(np.abs(new) < np.abs(old)), v.path


def test_keras_own_exclusions_are_not_saved_ours_are(tmp_path):
    """Why a wrapper: `exclude_from_weight_decay` is no part of an optimizer's config."""
    plain = keras.optimizers.AdamW(0.1, weight_decay=0.5)
    plain.exclude_from_weight_decay(var_names=["bias"])
    restored = keras.optimizers.AdamW.from_config(plain.get_config())
    assert getattr(restored, "_exclude_from_weight_decay_pattern", None) is None
    ours = GroupedOptimizer(keras.optimizers.AdamW(0.1, weight_decay=0.5),
                            no_weight_decay=["head/"], lr_multipliers={"head/bias": 2.0})
    again = keras.optimizers.deserialize(keras.optimizers.serialize(ours))
    assert type(again) is GroupedOptimizer and type(again.inner_optimizer).__name__ == "AdamW"
    assert (again.weight_decay_on, again.no_weight_decay, again.lr_multipliers) == (
        "kernels", ["head/"], {"head/bias": 2.0})
    assert again.inner_optimizer.weight_decay == 0.5


def test_bad_arguments_name_the_problem():
    adamw = keras.optimizers.AdamW(0.1)
    with pytest.raises(ValueError, match="valid: kernels, all"):
        GroupedOptimizer(adamw, weight_decay_on="biases")
    with pytest.raises(ValueError, match="finite and >= 0"):
        GroupedOptimizer(adamw, lr_multipliers={"head/kernel": -1})
    with pytest.raises(TypeError, match="LossScaleOptimizer goes outside"):
        GroupedOptimizer(keras.optimizers.LossScaleOptimizer(adamw))
    with pytest.raises(ValueError, match=r"in \(0, 1\]"):
        layer_decay(named_like_a_vit(), 1.5)
    with pytest.raises(ValueError, match="no encoder blocks"):
        inputs = keras.Input((2,))
        layer_decay(keras.Model(inputs, keras.layers.Dense(1)(inputs)), 0.5)
    optimizer = GroupedOptimizer(keras.optimizers.AdamW(0.1), lr_multipliers={"vit/x": 0.5})
    with pytest.raises(ValueError, match="made for another model"):
        optimizer.build(named_like_a_vit().trainable_variables)


# -- layer-wise learning-rate decay ------------------------------------------------------

@once  # which layer is which: Keras' graph, the same on every backend
def test_layer_decay_multipliers_by_hand(vit):
    """Block i of L gets d^(L - i), the embeddings d^(L + 1), the final norm and head 1."""
    d, depth = 0.5, 2
    model, later = vit, tiny_vit(**LATER)
    # (Kernel-only weight decay leaves later ViTs' tokens and scales alone too.)
    assert {v.name for v in later.trainable_variables if not decays_as_kernel(v)} == (
        NOT_DECAYED - {"cls"} | LATER_NOT_DECAYED)
    scales = layer_decay(model, d)
    assert set(scales) == {v.path for v in model.weights}
    for path, scale in scales.items():
        top = path.split("/")[0]
        if top == "embedding":
            expected = d ** (depth + 1)
        elif top.startswith("encoderblock_"):
            expected = d ** (depth - int(top.split("_")[1]))
        else:
            assert top in ("encoder_norm", "head"), path
            expected = 1.0
        assert scale == expected, path
    # Registers count as embedding, LayerScale as its block, an attention-pooling head as head.
    scales = layer_decay(later, d)
    assert scales["registers/registers"] == d ** 3
    assert scales["encoderblock_0/LayerScale_1/scale"] == d ** 2
    assert scales["map_head/probe"] == scales["map_head/query_kernel"] == 1.0
    # A hybrid's ResNet stem counts as embedding; a backbone inside another model is found.
    hybrid = keras_vit.ViT(image_size=16, patch_size=1, hidden_size=8, num_layers=1,
                           num_heads=2, mlp_dim=8, resnet_num_layers=(1,), classes=2)
    scales = layer_decay(hybrid, d)
    assert scales["conv_root/kernel"] == scales["embedding/kernel"] == d ** 2
    inputs = keras.Input((3,))
    outer = keras.Model(inputs, keras.layers.Dense(2, name="new_head")(named_like_a_vit()(inputs)))
    scales = layer_decay(outer, d)
    assert scales["embedding/kernel"] == d ** 3 and scales["encoderblock_1/bias"] == d
    assert scales["head/kernel"] == scales["new_head/kernel"] == 1.0


def named_like_a_vit():
    """Dense layers named as a ViT's parts: what `layer_decay` reads, in 8 variables."""
    inputs = keras.Input((3,))
    x = inputs
    for name in ("embedding", "encoderblock_0", "encoderblock_1", "head"):
        x = keras.layers.Dense(3, name=name)(x)
    return keras.Model(inputs, x)


class KnownGradients(keras.Model):
    """A model whose loss is sum_v <G_v, v> over another's variables: its gradient is G."""

    def __init__(self, inner, gradients):
        super().__init__()
        self.inner = inner
        self.known = [ops.convert_to_tensor(g) for g in gradients]

    def call(self, x):
        return x

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return sum(ops.sum(g * v) for g, v in zip(self.known, self.inner.trainable_variables))


def numpy_updates(kind, start, grads, rates, decays, steps, wd):
    """Each variable after `steps` steps of its own learning rate, from the update rules."""
    out = []
    for w, g, lr, decay in zip(start, grads, rates, decays):
        w, m, v = w.copy(), np.zeros_like(w), np.zeros_like(w)
        for t in range(1, steps + 1):
            if decay:  # Keras' decoupled weight decay, before the step
                w = w - w * wd * lr
            if kind == "sgd":  # Keras SGD: m = momentum m - lr g; w += m
                m = 0.9 * m - lr * g
                w = w + m
                continue
            m = 0.9 * m + 0.1 * g
            v = 0.999 * v + 0.001 * g * g
            alpha = lr * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t)
            w = w - alpha * m / (np.sqrt(v) + 1e-7)
        out.append(w)
    return out


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "compiled"])
def test_each_variable_moves_by_its_own_learning_rate(jit):
    """Two steps of SGD (momentum, weight decay), Adam and AdamW with layer decay 0.5: every
    variable equals NumPy's update at lr x its multiplier (0.125 ... 1), the kernels'
    decoupled decay at that rate too. Eagerly, and compiled: in fit() with jit_compile=True
    (jax.jit, XLA); on PyTorch the optimizer's apply under torch.compile (Dynamo and
    AOTAutograd, the tracing jit_compile=True does, without Inductor's C++ code generation,
    which decides no learning rate), AdamW alone there (each trace costs seconds; AdamW takes
    Adam's path and decays)."""
    net = named_like_a_vit()
    randomise(net.trainable_variables)
    start = values(net.trainable_variables)
    rng = np.random.default_rng(2)
    grads = [rng.normal(size=w.shape).astype("float32") for w in start]
    scales = layer_decay(net, 0.5)
    assert [scales[v.path] for v in net.trainable_variables] == [
        0.125, 0.125, 0.25, 0.25, 0.5, 0.5, 1.0, 1.0]
    lr, wd = 0.01, 0.5
    x = np.zeros((2, 1), "float32")
    kinds = (("sgd", keras.optimizers.SGD(lr, momentum=0.9, weight_decay=wd)),
             ("adam", keras.optimizers.Adam(lr)),
             ("adamw", keras.optimizers.AdamW(lr, weight_decay=wd)))
    torch_jit = jit and BACKEND == "torch"
    if torch_jit:
        kinds = kinds[2:]
    for kind, inner in kinds:
        for v, w in zip(net.trainable_variables, start):
            v.assign(w)
        optimizer = GroupedOptimizer(inner, lr_multipliers=scales)
        if torch_jit:
            import torch

            optimizer.build(net.trainable_variables)
            step = torch.compile(optimizer.apply, backend="aot_eager")
            for _ in range(2):
                step([ops.convert_to_tensor(g) for g in grads])
        else:
            model = KnownGradients(net, grads)
            model.compile(optimizer=optimizer, jit_compile=jit, run_eagerly=not jit)
            model.fit(x, x, batch_size=1, epochs=1, shuffle=False, verbose=0)
        assert int(ops.convert_to_numpy(optimizer.iterations)) == 2
        rates = [lr * scales[v.path] for v in net.trainable_variables]
        decays = [kind != "adam" and v.name == "kernel" for v in net.trainable_variables]
        expected = numpy_updates(kind, start, grads, rates, decays, 2, wd)
        for v, got, want, w0 in zip(net.trainable_variables, values(net.trainable_variables),
                                    expected, start):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=5e-7,
                                       err_msg=f"{kind} {v.path}")
            assert np.max(np.abs(got - w0)) > 1e-4  # it moved


def test_saved_with_the_model_and_trains_on_identically(tmp_path):
    """A compiled model saves the wrapper, its multipliers and the inner optimizer's state;
    loaded back, the next steps equal the original's next steps."""
    model = named_like_a_vit()
    optimizer = GroupedOptimizer(keras.optimizers.AdamW(0.01, weight_decay=0.1),
                                 lr_multipliers=layer_decay(model, 0.6))
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 3)).astype("float32"), rng.normal(size=(8, 3)).astype("float32")
    model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded.optimizer) is GroupedOptimizer
    assert type(loaded.optimizer.inner_optimizer).__name__ == "AdamW"
    assert loaded.optimizer.lr_multipliers == optimizer.lr_multipliers
    assert loaded.optimizer.weight_decay_on == "kernels"
    assert int(ops.convert_to_numpy(loaded.optimizer.iterations)) == 2
    for a, b in zip(loaded.optimizer.variables, optimizer.variables):
        np.testing.assert_array_equal(ops.convert_to_numpy(a), ops.convert_to_numpy(b))
    for m in (model, loaded):
        m.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_allclose(ops.convert_to_numpy(a), ops.convert_to_numpy(b), rtol=1e-6,
                                   atol=1e-7, err_msg=a.path)
