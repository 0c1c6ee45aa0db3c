"""Few-shot linear evaluation: the paper's measure of frozen representations (Sec. 4.1).

"Few-shot accuracies are obtained by solving a regularized least-squares regression problem
that maps the (frozen) representation of a subset of training images to {-1, 1}^K target
vectors", in closed form; the paper's Fig. 3-4 and its position-embedding ablation (App. D.4,
ImageNet 5-shot) report it. Written as big_vision's `fewshot_lsr` evaluator computes it:

- the training features of the K x `shots` sampled images are whitened (their mean and
  standard deviation, + 1e-5), and a constant feature of 100 is appended, so that the bias is
  almost unregularised;
- W = (X^T X + l2 I)^-1 X^T Y with Y = 2 one_hot - 1, through an eigendecomposition of X^T X
  (or of X X^T when there are fewer images than features), l2 = 2^10 (big_vision's
  `common_fewshot` configuration: a fixed regulariser, not chosen on the test images);
- a test image's class is the argmax of its whitened, padded features times W;
- each seed draws the shots anew (`numpy.random.default_rng(seed)` permutes each class's
  images; a seed's 1-shot images are among its 5-shot ones); big_vision reports 3 seeds.
"""

from __future__ import annotations

import dataclasses

import numpy as np

L2_REG = 2.0 ** 10
BIAS_CONSTANT = 100.0
SHOTS = (1, 5, 10, 25)


@dataclasses.dataclass(frozen=True)
class LinearMap:
    """A least-squares classifier: whitening statistics and the weights (D + 1, K)."""

    mean: np.ndarray
    std: np.ndarray
    weights: np.ndarray

    def features(self, x):
        """Whitened features with the constant bias feature appended, (N, D + 1)."""
        x = (np.asarray(x, dtype=np.float64) - self.mean) / self.std
        return np.pad(x, ((0, 0), (0, 1)), constant_values=BIAS_CONSTANT)

    def predict(self, x):
        """Class indices, (N,)."""
        return np.argmax(self.features(x) @ self.weights, axis=1)


def targets(labels, num_classes):
    """{-1, 1}^K targets: 2 one_hot(labels) - 1."""
    labels = np.asarray(labels).astype(int)
    return 2.0 * (labels[:, None] == np.arange(num_classes)[None, :]) - 1.0


def lsr_fit(features, labels, num_classes, l2_reg=L2_REG) -> LinearMap:
    """Solves the regularised least squares of the few-shot evaluation in closed form.

    Args:
        features: (N, D) frozen features of the training images.
        labels: (N,) integer classes in [0, num_classes).
        num_classes: K.
        l2_reg: the ridge penalty on every weight (the bias's too, which its constant feature
            of 100 makes negligible).

    Returns:
        A `LinearMap`.

    Example:

    >>> import numpy as np
    >>> x = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9], [0.9, 0.2]])
    >>> lsr_fit(x, [0, 1, 0, 1], 2, l2_reg=1.0).predict([[0.2, 0.8], [0.7, 0.1]]).tolist()
    [0, 1]
    """
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}.")
    mean = x.mean(axis=0, keepdims=True)
    std = x.std(axis=0, keepdims=True) + 1e-5
    linear = LinearMap(mean, std, None)
    x = linear.features(x)
    y = targets(labels, num_classes)
    # (x^T x + l2 I)^-1 x^T y = q (eigs + l2)^-1 q^T x^T y with x^T x = q diag(eigs) q^T; with
    # fewer points than dimensions, x^T (x x^T + l2 I)^-1 y, from the smaller x x^T.
    if x.shape[0] >= x.shape[1]:
        eigs, q = np.linalg.eigh(x.T @ x)
        lhs, rhs = q, q.T @ (x.T @ y)
    else:
        eigs, q = np.linalg.eigh(x @ x.T)
        lhs, rhs = x.T @ q, q.T @ y
    weights = (lhs / (eigs + l2_reg)[None, :]) @ rhs
    return LinearMap(mean, std, weights)


def sample_shots(labels, shots, seed, num_classes=None):
    """Indices of `shots` images of every class, as big_vision draws them for a seed.

    Raises:
        ValueError: when a class has fewer than `shots` images.
    """
    labels = np.asarray(labels).astype(int)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(num_classes):
        indices = rng.permutation(np.flatnonzero(labels == c))
        if len(indices) < shots:
            raise ValueError(f"Class {c} has {len(indices)} training image(s), fewer than "
                             f"{shots} shots; use at most {len(indices)} shots.")
        chosen.append(indices[:shots])
    return np.concatenate(chosen)


def fewshot_accuracy(train_features, train_labels, test_features, test_labels, shots=SHOTS,
                     seeds=3, l2_reg=L2_REG, num_classes=None):
    """Few-shot linear accuracy of frozen features, per shot count and seed.

    Args:
        train_features, train_labels: (N, D) and (N,): the pool the shots are drawn from.
        test_features, test_labels: (M, D) and (M,): what the accuracy is measured on.
        shots: images per class, e.g. (1, 5, 10, 25).
        seeds: number of shot draws (seeds 0 .. seeds - 1), as big_vision's `num_seeds`.
        l2_reg: the ridge penalty (big_vision: 2^10).
        num_classes: K (default: from the labels).

    Returns:
        {shots: {"mean": ..., "std": ..., "accuracies": [one per seed]}} (population std).

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> centres = rng.normal(size=(3, 8)) * 4
    >>> labels = np.repeat(np.arange(3), 20)
    >>> features = centres[labels] + rng.normal(size=(60, 8))
    >>> result = fewshot_accuracy(features[::2], labels[::2], features[1::2], labels[1::2],
    ...                           shots=(1, 5), seeds=2)
    >>> sorted(result), len(result[5]["accuracies"]), result[5]["mean"]
    ([1, 5], 2, 1.0)
    """
    train_labels = np.asarray(train_labels).astype(int)
    test_labels = np.asarray(test_labels).astype(int)
    if num_classes is None:
        num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    shots = tuple(int(s) for s in shots)
    if not shots or min(shots) < 1:
        raise ValueError(f"shots must be positive integers, got {shots}.")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}.")
    train_features = np.asarray(train_features, dtype=np.float64)
    accuracies = {s: [] for s in shots}
    for seed in range(seeds):
        # One permutation per class and seed; each shot count takes its first images.
        order = sample_shots(train_labels, max(shots), seed, num_classes).reshape(
            num_classes, max(shots))
        for s in shots:
            chosen = order[:, :s].reshape(-1)
            linear = lsr_fit(train_features[chosen], train_labels[chosen], num_classes, l2_reg)
            accuracies[s].append(float(np.mean(linear.predict(test_features) == test_labels)))
    return {s: {"mean": float(np.mean(a)), "std": float(np.std(a)), "accuracies": a}
            for s, a in accuracies.items()}
