"""Linear probe and k-NN accuracy of frozen features, beside the few-shot evaluation.

- `linear_probe`: multinomial logistic regression (scikit-learn's L-BFGS) on the standardised
  features of the whole training split, the probe CLIP reports (there with a swept `C`).
- `knn_accuracy`: DINO's weighted k-NN classifier (Caron et al. 2021, `eval_knn.py`): features
  scaled to unit length, the k training images of highest cosine similarity s vote for their
  class with weight exp(s / T); k = 20 and T = 0.07 as DINO reports.
"""

from __future__ import annotations

import numpy as np

KNN_K = 20
KNN_TEMPERATURE = 0.07


def linear_probe(train_features, train_labels, test_features, test_labels, C=1.0,
                 max_iter=1000):
    """Test accuracy of a logistic-regression probe trained on frozen features.

    Minimises 0.5 |W|^2 + C sum_i cross_entropy(W x_i + b, y_i) over the standardised
    training features (each feature centred and scaled by the training split's statistics),
    the bias unpenalised.

    Args:
        train_features, train_labels: (N, D) and (N,).
        test_features, test_labels: (M, D) and (M,).
        C: inverse regularisation strength.
        max_iter: L-BFGS iterations at most.

    Returns:
        (accuracy, the fitted `sklearn.pipeline.Pipeline`).

    Example:

    >>> import numpy as np
    >>> x = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]])
    >>> accuracy, _ = linear_probe(x, [0, 1, 0, 1], [[0.2, 0.8], [0.7, 0.1]], [0, 1])
    >>> accuracy
    1.0
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(np.asarray(train_features, dtype=np.float64), np.asarray(train_labels))
    predictions = probe.predict(np.asarray(test_features, dtype=np.float64))
    return float(np.mean(predictions == np.asarray(test_labels))), probe


def knn_predict(train_features, train_labels, test_features, k=KNN_K,
                temperature=KNN_TEMPERATURE, num_classes=None, chunk=1024):
    """DINO's weighted k-NN class of each test feature, (M,)."""
    train = _unit(train_features)
    train_labels = np.asarray(train_labels).astype(int)
    num_classes = int(train_labels.max()) + 1 if num_classes is None else num_classes
    k = min(int(k), len(train))
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}.")
    test = _unit(test_features)
    predictions = []
    for start in range(0, len(test), chunk):
        similarity = test[start:start + chunk] @ train.T
        nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
        weights = np.exp(np.take_along_axis(similarity, nearest, axis=1) / temperature)
        votes = np.zeros((len(similarity), num_classes))
        np.add.at(votes, (np.arange(len(similarity))[:, None], train_labels[nearest]), weights)
        predictions.append(np.argmax(votes, axis=1))
    return np.concatenate(predictions)


def knn_accuracy(train_features, train_labels, test_features, test_labels, k=KNN_K,
                 temperature=KNN_TEMPERATURE):
    """Test accuracy of DINO's weighted k-NN classifier on frozen features.

    Example:

    >>> import numpy as np
    >>> train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    >>> knn_accuracy(train, [0, 0, 1, 1], [[0.8, 0.3], [0.2, 0.7]], [0, 1], k=2)
    1.0
    """
    test_labels = np.asarray(test_labels).astype(int)
    num_classes = int(max(np.max(train_labels), test_labels.max())) + 1
    predictions = knn_predict(train_features, train_labels, test_features, k, temperature,
                              num_classes)
    return float(np.mean(predictions == test_labels))


def _unit(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
