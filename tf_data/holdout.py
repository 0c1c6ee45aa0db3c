"""Seeded, stratified hold-out of validation and test shares from one pool."""

from __future__ import annotations

import numpy as np

from tf_data.errors import DataError


def stratified_holdout(
    labels: np.ndarray,
    val_fraction: float,
    test_fraction: float,
    seed: int,
) -> dict[str, np.ndarray]:
    """Splits example indices into train/validation/test, class by class.

    Each class contributes `round(n * fraction)` examples to validation and to
    test (at least one each when the fraction is positive and the class has
    three or more examples), so small classes are still represented. The result
    depends only on `labels`, the fractions and `seed`.

    Args:
        labels: Integer label per example, shape [N].
        val_fraction: Share of each class held out for validation.
        test_fraction: Share of each class held out for test.
        seed: Seed of the permutation within each class.

    Returns:
        Dict with sorted index arrays under "train", "validation" and "test".

    Raises:
        DataError: If the fractions leave no training data.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1):
        raise DataError("Hold-out fractions must lie in [0, 1).")
    if val_fraction + test_fraction >= 1:
        raise DataError(
            f"val_fraction + test_fraction = {val_fraction + test_fraction} "
            "leaves no training data; it must be below 1."
        )
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n = len(idx)
        n_test = _share(n, test_fraction)
        n_val = _share(n - n_test, val_fraction * n / max(n - n_test, 1))
        parts["test"].append(idx[:n_test])
        parts["validation"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return {k: np.sort(np.concatenate(v)).astype(np.int64) for k, v in parts.items()}


def _share(n: int, fraction: float) -> int:
    """Number of a class's `n` examples to hold out, keeping >= 1 for training."""
    if fraction <= 0 or n < 3:
        return 0
    return int(min(max(1, round(n * fraction)), n - 1))
