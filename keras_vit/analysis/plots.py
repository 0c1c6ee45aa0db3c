"""Matplotlib figures for the analyses, written as PNG or SVG (by the file's extension).

Each function takes the arrays computed in `keras_vit.analysis` and a path, and returns the path.
Matplotlib runs headless (Agg).
"""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _save(fig, path):
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_mean_attention_distance(distances, path, image_size=None):
    """Fig. 7 right: mean attention distance of every head (dots) against the layer."""
    distances = np.asarray(distances)
    layers, heads = distances.shape
    fig, ax = plt.subplots(figsize=(5, 4))
    for head in range(heads):
        ax.scatter(np.arange(1, layers + 1), distances[:, head], s=14, label=f"head {head + 1}")
    ax.set_xlabel("network depth (layer)")
    ax.set_ylabel("mean attention distance (pixels)")
    if image_size:
        ax.set_ylim(0, image_size)
    ax.set_xticks(np.arange(1, layers + 1))
    if heads <= 16:
        ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def plot_position_similarity(similarity, path):
    """Fig. 7 centre: one small cosine-similarity map per patch, laid out on the grid."""
    rows, cols = similarity.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.8 + 1, rows * 0.8), squeeze=False)
    for i in range(rows):
        for j in range(cols):
            image = axes[i, j].imshow(similarity[i, j], vmin=-1, vmax=1, cmap="viridis")
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    fig.colorbar(image, ax=axes, shrink=0.6, label="cosine similarity")
    return _save(fig, path)


def plot_filters(tiles, path, explained=None):
    """Fig. 7 left: principal components of the patch-embedding filters as RGB tiles."""
    count = len(tiles)
    cols = min(7, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.1, rows * 1.2), squeeze=False)
    for index, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if index < count:
            tile = tiles[index]
            ax.imshow(tile[..., 0] if tile.shape[-1] == 1 else tile[..., :3],
                      cmap="gray" if tile.shape[-1] == 1 else None, interpolation="nearest")
            if explained is not None:
                ax.set_title(f"{100 * explained[index]:.1f}%", fontsize=6)
    return _save(fig, path)


def plot_attention_overlay(image, attention_map, path, title=None):
    """An input image beside itself overlaid with an attention (e.g. rollout) map."""
    image = np.asarray(image, np.float32)
    image = (image - image.min()) / max(float(image.max() - image.min()), 1e-12)
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    for ax in axes:
        ax.axis("off")
        ax.imshow(image[..., 0] if image.shape[-1] == 1 else image,
                  cmap="gray" if image.shape[-1] == 1 else None)
    axes[1].imshow(attention_map, cmap="jet", alpha=0.5)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_head_maps(maps, path):
    """One map per head (e.g. the last layer's class-token attention)."""
    heads = len(maps)
    cols = min(8, heads)
    rows = math.ceil(heads / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.3, rows * 1.4), squeeze=False)
    for index, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if index < heads:
            ax.imshow(maps[index], cmap="inferno")
            ax.set_title(f"head {index + 1}", fontsize=7)
    return _save(fig, path)
