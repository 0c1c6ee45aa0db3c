"""`keras_vit.evaluation` and `keras-vit fewshot`: the few-shot least squares against a NumPy
closed form and scikit-learn's Ridge, the shot draws against big_vision's code, k-NN against
scikit-learn's neighbours, the probe against SciPy's L-BFGS on its stated objective."""

import keras
import numpy as np
import pytest

import keras_vit
from applications import cli
from conftest import once
from keras_vit import evaluation


def clusters(rng, sizes, dim, classes, spread=1.0):
    """Gaussian clusters around the same centres, one (features, labels) pair per size."""
    centres = rng.normal(size=(classes, dim)) * 2
    out = []
    for n in sizes:
        labels = rng.integers(0, classes, size=n)
        out.append((centres[labels] + spread * rng.normal(size=(n, dim)), labels))
    return out


def numpy(x):
    return keras.ops.convert_to_numpy(x)


def reference_lsr(x, labels, classes, l2, test_x):
    """The paper's least squares written out: whiten, append 100, solve the normal equations."""
    mean, std = x.mean(0), x.std(0) + 1e-5

    def prepare(z):
        z = (z - mean) / std
        return np.concatenate([z, np.full((len(z), 1), 100.0)], axis=1)

    xp = prepare(x)
    y = np.where(labels[:, None] == np.arange(classes), 1.0, -1.0)
    weights = np.linalg.solve(xp.T @ xp + l2 * np.eye(xp.shape[1]), xp.T @ y)
    return weights, prepare(test_x) @ weights, xp, y


@once
@pytest.mark.parametrize("n", [40, 6], ids=["more-images-than-features", "fewer"])
def test_least_squares_equals_numpy_closed_form_and_sklearn_ridge(rng, n):
    from sklearn.linear_model import Ridge

    (x, labels), (test_x, _) = clusters(rng, (n, 30), 12, 4)
    linear = evaluation.lsr_fit(x, labels, 4, l2_reg=2.0 ** 10)
    weights, scores, xp, y = reference_lsr(x, labels, 4, 2.0 ** 10, test_x)
    np.testing.assert_allclose(linear.weights, weights, rtol=1e-9, atol=1e-12)
    ridge = Ridge(alpha=2.0 ** 10, fit_intercept=False, solver="svd").fit(xp, y)
    np.testing.assert_allclose(linear.weights, ridge.coef_.T, rtol=1e-8, atol=1e-12)
    np.testing.assert_array_equal(linear.predict(test_x), np.argmax(scores, axis=1))
    # A small regulariser fits the 4-class targets almost exactly: the map is not trivial.
    assert np.all(evaluation.lsr_fit(x, labels, 4, l2_reg=1e-3).predict(x) == labels)


@once
def test_shots_are_drawn_as_big_vision_draws_them_and_scored_per_seed(rng):
    (x, labels), (test_x, test_labels) = clusters(rng, (200, 80), 6, 5, spread=2.5)
    result = evaluation.fewshot_accuracy(x, labels, test_x, test_labels, shots=(1, 5, 10),
                                         seeds=3, l2_reg=4.0)
    for seed in range(3):
        # big_vision/evaluators/fewshot_lsr.py, compute_fewshot_metrics, verbatim:
        g = np.random.default_rng(seed)
        class_indices = [g.permutation(np.where(labels == c)[0]) for c in range(5)]
        for shots in (1, 5, 10):
            idx = np.concatenate([i[:shots] for i in class_indices], axis=0)
            _, scores, _, _ = reference_lsr(x[idx], labels[idx], 5, 4.0, test_x)
            accuracy = np.mean(np.argmax(scores, 1) == test_labels)
            assert result[shots]["accuracies"][seed] == pytest.approx(accuracy, abs=1e-12)
    for shots, r in result.items():
        assert r["mean"] == pytest.approx(np.mean(r["accuracies"]))
        assert r["std"] == pytest.approx(np.std(r["accuracies"]))
    assert result[10]["mean"] > result[1]["mean"] > 0.3  # more shots, better (chance 0.2)
    with pytest.raises(ValueError, match="fewer than 500 shots"):
        evaluation.sample_shots(labels, 500, seed=0)


@once
def test_knn_equals_sklearn_cosine_neighbours_with_dino_weights(rng):
    from sklearn.neighbors import KNeighborsClassifier

    (x, labels), (test_x, test_labels) = clusters(rng, (300, 100), 8, 6, spread=3.0)
    knn = KNeighborsClassifier(n_neighbors=20, metric="cosine", algorithm="brute",
                               weights=lambda d: np.exp((1 - d) / 0.07)).fit(x, labels)
    ours = evaluation.knn_predict(x, labels, test_x, k=20, temperature=0.07, chunk=37)
    np.testing.assert_array_equal(ours, knn.predict(test_x))
    accuracy = evaluation.knn_accuracy(x, labels, test_x, test_labels)
    assert accuracy == np.mean(ours == test_labels) and 0.3 < accuracy < 1.0


@once
def test_linear_probe_minimises_its_stated_objective(rng):
    """Against SciPy's L-BFGS on 0.5 |W|^2 + C sum CE over standardised features."""
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    (x, labels), (test_x, test_labels) = clusters(rng, (90, 40), 5, 3, spread=2.0)
    accuracy, probe = evaluation.linear_probe(x, labels, test_x, test_labels, C=0.5)
    z = (x - x.mean(0)) / x.std(0)
    onehot = np.eye(3)[labels]

    def objective(theta):
        w, b = theta[:15].reshape(5, 3), theta[15:]
        logits = z @ w + b
        ce = logsumexp(logits, axis=1) - np.sum(logits * onehot, axis=1)
        p = np.exp(logits - logsumexp(logits, axis=1, keepdims=True))
        grad_w = w + 0.5 * z.T @ (p - onehot)
        grad_b = 0.5 * np.sum(p - onehot, axis=0)
        return 0.5 * np.sum(w * w) + 0.5 * np.sum(ce), np.concatenate([grad_w.ravel(), grad_b])

    best = minimize(objective, np.zeros(18), jac=True, method="L-BFGS-B",
                    options=dict(gtol=1e-10, ftol=1e-14, maxiter=5000))
    logistic = probe[-1]
    # Multinomial logits are defined up to a constant per image: compare centred weights.
    ours = logistic.coef_.T - logistic.coef_.T.mean(1, keepdims=True)
    theirs = best.x[:15].reshape(5, 3)
    np.testing.assert_allclose(ours, theirs - theirs.mean(1, keepdims=True), atol=2e-3)
    test_z = (test_x - x.mean(0)) / x.std(0)
    expected = np.argmax(test_z @ theirs + best.x[15:], axis=1)
    assert accuracy == pytest.approx(np.mean(expected == test_labels))


def test_extract_reads_arrays_and_batches_on_this_backend(rng):
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2, name="features")
    model = keras.Model(inputs, dense(inputs))
    kernel, bias = (numpy(w) for w in dense.weights)
    x = rng.normal(size=(5, 3)).astype("float32")
    expected = x @ kernel + bias
    features, labels = evaluation.extract(model, (x, np.arange(5)), batch_size=2)
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    assert labels.tolist() == [0, 1, 2, 3, 4]
    one_hot = np.eye(5, dtype="float32")  # labels as MixUp pipelines give them
    features, labels = evaluation.extract(model, ((x[i:i + 3], one_hot[i:i + 3]) for i in (0, 3)))
    np.testing.assert_allclose(features, expected, rtol=1e-5, atol=1e-6)
    assert labels.tolist() == [0, 1, 2, 3, 4]


@once  # which tensor is the representation: Keras' graph, the same on every backend
def test_representations_any_layer_and_pooling(rng):
    vit = keras_vit.ViT(image_size=8, patch_size=4, hidden_size=8, num_layers=2, num_heads=2,
                        mlp_dim=8, classes=3, representation_size=6)
    images = rng.uniform(0, 255, size=(5, 8, 8, 3)).astype("float32")
    own = numpy(evaluation.representation_model(vit)(images))  # what the head reads
    pre_logits = numpy(keras.Model(vit.inputs, vit.get_layer("pre_logits").output)(images))
    np.testing.assert_allclose(own, pre_logits, rtol=1e-6, atol=1e-6)
    tokens = numpy(keras_vit.feature_extractor(vit, blocks=0)(images))
    for pooling, reduce in (("avg", np.mean), ("max", np.max)):
        pooled = numpy(evaluation.representation_model(vit, layer=0, pooling=pooling)(images))
        np.testing.assert_allclose(pooled, reduce(tokens, axis=1), rtol=1e-6, atol=1e-6)
    normed = numpy(keras_vit.feature_extractor(vit, blocks=-1, norm=True)(images))
    token = numpy(evaluation.representation_model(vit, pooling="token")(images))
    np.testing.assert_allclose(token, normed[:, 0], rtol=1e-6, atol=1e-6)  # the class token
    # extract() reads arrays in batches; a model giving tokens is pooled (by default: the
    # class token).
    tokens_model = keras_vit.feature_extractor(vit, blocks=-1, norm=True)
    features, labels = evaluation.extract(evaluation.representation_model(tokens_model),
                                          (images, np.arange(5)), batch_size=2)
    np.testing.assert_allclose(features, normed[:, 0], rtol=1e-5, atol=1e-5)  # jit vs eager
    assert labels.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="out of range"):
        evaluation.representation_model(vit, layer=5)
    gap = keras_vit.ViT(image_size=8, patch_size=4, hidden_size=8, num_layers=1, num_heads=2,
                        mlp_dim=8, classes=3, classifier="gap")
    with pytest.raises(ValueError, match="no class token; use pooling 'avg' or 'max'"):
        evaluation.representation_model(gap, layer=0, pooling="token")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("fewshot") / "tiny.keras"
    keras_vit.ViT(image_size=8, patch_size=2, hidden_size=16, num_layers=1, num_heads=2,
                  mlp_dim=16, classes=10).save(path)
    return path


@once
@pytest.mark.parametrize("args, message", [
    (["--shots", "0,5"], "--shots '0,5' is invalid"),
    (["--shots", "1,500"], "--shots 500 is more than the"),
    (["--layer", "4"], "Block index 4 is out of range"),
    (["--seeds", "0"], "--seeds 0 is invalid"),
])
def test_fewshot_bad_input_exits_2_with_one_line(tiny_model, args, message, capsys):
    code = cli.main(["fewshot", str(tiny_model), "--dataset", "digits", *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


@once
def test_fewshot_of_a_missing_model_exits_2(tmp_path, capsys):
    code = cli.main(["fewshot", str(tmp_path / "none.keras"), "--dataset", "digits"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "No model at" in err and len(err.splitlines()) == 1
