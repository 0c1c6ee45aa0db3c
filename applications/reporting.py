"""Run reports: metrics.json and the training-curve PNG."""

from __future__ import annotations

import os

from applications.config import write_json_atomic

METRICS_FILE = "metrics.json"
CURVES_FILE = "training_curves.png"


def write_metrics(output: str, metrics: dict) -> str:
    """Writes OUTPUT/metrics.json atomically; returns the path."""
    path = os.path.join(output, METRICS_FILE)
    write_json_atomic(path, metrics)
    return path


def plot_curves(output: str, history: list[dict], title: str = "") -> str | None:
    """Plots loss and accuracy per epoch (train and validation) to a PNG.

    Args:
        output: Run directory.
        history: One dict per completed epoch with Keras' log keys.
        title: Figure title.

    Returns:
        The PNG's path, or None when there is no history.
    """
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display; also safe when another backend was set
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    # One panel per quantity the run logged (pre-training logs a loss and no accuracy).
    panels = [(key, label) for key, label in (("loss", "loss"), ("accuracy", "top-1 accuracy"))
              if any(h.get(key) is not None or h.get("val_" + key) is not None for h in history)]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for prefix, style in (("", "-"), ("val_", "--")):
            values = [h.get(prefix + key) for h in history]
            if any(v is not None for v in values):
                ax.plot(epochs, values, style, label=("validation" if prefix else "train"))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = os.path.join(output, CURVES_FILE)
    tmp = os.path.join(output, f".tmp-{os.getpid()}-{CURVES_FILE}")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.replace(tmp, path)
    return path
