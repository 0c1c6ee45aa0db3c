"""The input pipeline's fast paths: crop-window JPEG decoding, scaled evaluation decoding,
the folder index cache, autotuned pipelines' prompt exit.

Each fast path is checked against the slow path it replaces (same pixels, same windows).
"""

import io
import os

import numpy as np
import pytest
import tensorflow as tf

from conftest import once
from tf_data import preprocess


def _image_bytes(array, fmt, mode=None, **save_options):
    from PIL import Image

    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save_options)
    return buffer.getvalue()


def _photo(height, width):
    """A natural photograph (scikit-learn's sample), cropped to height x width."""
    from sklearn.datasets import load_sample_images

    return load_sample_images().images[1][:height, :width]


@pytest.mark.parametrize("fmt, kwargs", [
    ("JPEG", {}),  # 4:2:0 chroma: plain decode_and_crop_jpeg differs at the window's edges
    ("JPEG", {"progressive": True}),
    ("JPEG", {"subsampling": 1}),  # 4:2:2
    ("JPEG:L", {}), ("JPEG:CMYK", {}), ("PNG", {}), ("GIF", {}), ("BMP", {}),
])
def test_decode_crop_equals_decode_then_crop(fmt, kwargs):
    fmt, _, mode = fmt.partition(":")
    encoded = tf.constant(_image_bytes(_photo(203, 301), fmt, mode or None, **kwargs))
    whole = preprocess.decode_image(encoded).numpy()
    # Fixed windows, odd offsets and sizes, touching the edges or not.
    for y, x, h, w in [(0, 0, 203, 301), (17, 33, 101, 157), (1, 299, 202, 2), (202, 0, 1, 1),
                       (64, 48, 16, 16), (37, 5, 150, 290)]:
        window = tf.constant([y, x, h, w])
        if fmt == "JPEG":
            crop = preprocess.decode_jpeg_window(encoded, window, tf.constant(301))
            np.testing.assert_array_equal(crop.numpy(), whole[y:y + h, x:x + w])
        np.testing.assert_array_equal(
            preprocess.crop_to_window(tf.constant(whole), window).numpy(), whole[y:y + h, x:x + w])
    # Sampled windows: the window drawn for the whole image, and its pixels.
    for s in range(8):
        seed = tf.constant([s, 11])
        got = preprocess.decode_crop(encoded, seed, (0.05, 1.0)).numpy()
        y, x, h, w = preprocess.crop_window(tf.shape(whole), seed, (0.05, 1.0)).numpy()
        np.testing.assert_array_equal(got, whole[y:y + h, x:x + w])


def test_decode_resize_scales_large_jpegs_in_the_decoder():
    small = tf.constant(_image_bytes(_photo(90, 130), "JPEG"))  # < 2x of 48: decoded whole
    np.testing.assert_array_equal(
        preprocess.decode_resize(small, (48, 48)).numpy(),
        preprocess.resize(preprocess.decode_image(small), (48, 48)).numpy())
    large = tf.constant(_image_bytes(_photo(400, 600), "JPEG"))  # 1/4 scale covers 48 x 48
    fast = preprocess.decode_resize(large, (48, 48)).numpy()
    exact = preprocess.decode_resize(large, (48, 48), scaled_jpeg=False).numpy()
    # Against an antialiased resize: DCT scaling averages what it drops, bilinear skips it.
    reference = tf.image.resize(preprocess.decode_image(large), (48, 48), antialias=True).numpy()
    assert np.abs(fast - reference).mean() < np.abs(exact - reference).mean()
    assert np.abs(fast - reference).mean() < 4.0


@once  # tf.data only: the same on every backend
def test_resize_stays_within_the_pixel_range_without_a_clip():
    """`preprocess.resize` (bilinear, no clip) of extreme pixels, up and down at odd ratios:
    every output in [0, 255], and whole-image constants kept exactly."""
    rng = np.random.default_rng(0)
    for i, (height, width, out_h, out_w) in enumerate(
            [(7, 9, 224, 224), (301, 203, 224, 224), (2, 3, 17, 5), (519, 389, 31, 223)]):
        pixels = rng.choice(np.array([0, 1, 254, 255], np.uint8), (height, width, 3))
        out = preprocess.resize(tf.constant(pixels), (out_h, out_w)).numpy()
        assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 255.0, i
        for value in (0, 255):
            flat = preprocess.resize(tf.fill((height, width, 3), np.uint8(value)), (out_h, out_w))
            assert np.all(flat.numpy() == value)


@pytest.mark.parametrize("height, width, ratio", [
    (400, 600, 8),   # 50 x 75 still covers 48 x 48
    (380, 600, 4),   # 380 < 8 x 48: the rule takes 1/4 (95 x 150), not 1/8
    (120, 130, 2),   # 1/2: 60 x 65; 1/4 would be too small
    (90, 130, 1),    # under twice the size: decoded whole
])
@once  # tf.data only: the same on every backend
def test_decode_resize_decodes_at_the_largest_dct_scale_that_covers(height, width, ratio):
    """The scaled decode is libjpeg's own `decode_jpeg(ratio=r)` at the smallest scale still
    covering the size, then the bilinear resize: the same pixels, and not those of the
    neighbouring scales."""
    encoded = tf.constant(_image_bytes(_photo(height, width), "JPEG"))
    fast = preprocess.decode_resize(encoded, (48, 48)).numpy()
    at = {r: preprocess.resize(tf.io.decode_jpeg(encoded, channels=3, ratio=r), (48, 48)).numpy()
          for r in (1, 2, 4, 8)}
    np.testing.assert_array_equal(fast, at[ratio])
    for other in set(at) - {ratio}:
        assert np.abs(at[other] - at[ratio]).max() > 1.0, other
    png = tf.constant(_image_bytes(_photo(height, width), "PNG"))  # only JPEGs scale
    np.testing.assert_array_equal(preprocess.decode_resize(png, (48, 48)).numpy(),
                                  preprocess.resize(preprocess.decode_image(png), (48, 48)).numpy())


# ----------------------------------------------------------------------------- folder index


def _settle(*dirs, recursive=True):
    """Backdates the directories' mtimes (and their sub-folders') by a minute, as for a folder
    written a while ago (the index does not trust a directory changed in the last 2 s)."""
    import os
    import time

    old = time.time() - 60
    for top in dirs:
        for dirpath in [d for d, _, _ in os.walk(top)] if recursive else [top]:
            os.utime(dirpath, (old, old))


def _pairs(split, root):
    """The split's examples as (path relative to root, label), in the split's order."""
    return [(os.path.relpath(path.decode(), root), int(label))
            for path, label in split.make(0, 1).as_numpy_iterator()]


def test_folder_index_is_reused_and_invalidated(tmp_path, monkeypatch):
    from tf_data import folder

    root = tmp_path / "imgs"
    good = _image_bytes(_photo(24, 20), "JPEG")
    for cls in ("cat", "dog"):
        (root / cls / "sub").mkdir(parents=True)
        for i in range(5):
            (root / cls / f"{i}.jpg").write_bytes(good)
        (root / cls / "sub" / "deep.png").write_bytes(_image_bytes(_photo(9, 7), "PNG"))
    (root / "cat" / "broken.jpg").write_bytes(b"not a jpeg")
    _settle(root)
    decoded = []
    real = folder.find_unreadable
    monkeypatch.setattr(folder, "find_unreadable", lambda paths: decoded.append(len(paths)) or real(paths))

    def load():
        source = folder.load(root, val_fraction=0.2, test_fraction=0.2)
        return source, {r: s.num_examples for r, s in source.splits.items()}

    first, sizes = load()
    assert (root / folder.INDEX_FILE).is_file() and decoded == [13]
    assert [os.path.basename(p) for p in first.skipped_files] == ["broken.jpg"]
    again, sizes_again = load()  # nothing changed: no listing of files, no decoding
    assert decoded == [13, 0] and sizes_again == sizes and again.skipped_files == first.skipped_files
    # The same examples in the same splits as without the index: (path, label) pairs, in order.
    plain = folder.load(root, val_fraction=0.2, test_fraction=0.2, index=False)
    for role in ("train", "validation", "test"):
        assert _pairs(again.split(role), root) == _pairs(plain.split(role), root), role
        assert _pairs(first.split(role), root) == _pairs(plain.split(role), root), role
    # A new file (and a fixed one) in one class: only that directory is listed and checked again.
    (root / "dog" / "new.jpg").write_bytes(good)
    (root / "cat" / "broken.jpg").unlink()
    _settle(root / "dog", root / "cat", recursive=False)
    changed, sizes_changed = load()
    assert decoded[3:] == [6 + 5]  # (the index=False load decoded 13) dog's 6 files and cat's 5; the sub-folders are unchanged
    assert changed.skipped_files == () and sum(sizes_changed.values()) == 13
    replain = folder.load(root, val_fraction=0.2, test_fraction=0.2, index=False)
    for role in ("train", "validation", "test"):
        assert _pairs(changed.split(role), root) == _pairs(replain.split(role), root), role
    assert ("dog/new.jpg", 1) in sum((_pairs(changed.split(r), root) for r in changed.splits), [])
    # A folder where the index cannot be written (read-only; here its name is taken by a
    # directory, which also stops root, whom permissions do not stop): it goes to index_dir.
    (root / folder.INDEX_FILE).unlink()
    (root / folder.INDEX_FILE).mkdir()
    folder.load(root, index_dir=tmp_path / "run")
    assert folder.index_path(root, tmp_path / "run").is_file() and decoded[-1] == 13
    folder.load(root, index_dir=tmp_path / "run")
    assert decoded[-1] == 0


# ----------------------------------------------------------------------------- autotune exit

_EXIT_PROBE = """
import sys, time
import tf_data
source = tf_data.load_source("digits")
config = tf_data.PipelineConfig(image_size=(8, 8), batch_size=32, repeat=True, autotune=True)
train = iter(tf_data.build_dataset(source, "train", config, training=True))
evaluation = iter(tf_data.build_dataset(source, "validation", config, training=False))
start = time.time()
while time.time() - start < 2:  # long enough for the tuning thread to run and sleep
    next(train)
next(evaluation)
print("DONE", time.time(), flush=True)
"""  # exits with both iterators alive: they are destroyed during interpreter shutdown


@once  # a subprocess of its own, without Keras: the same on every backend
def test_autotuned_pipeline_exits_promptly():
    """TF 2.21 once stalled up to 60 s destroying an autotuned iterator (the tuning thread's
    wake-up); a process that used one must end within seconds of its last line."""
    import os
    import subprocess
    import sys
    import time

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", _EXIT_PROBE], env=env, capture_output=True,
                          text=True, timeout=120)
    ended = time.time()
    assert done.returncode == 0, done.stderr[-2000:]
    last = float(done.stdout.split("DONE")[1])
    assert ended - last < 10, f"exit took {ended - last:.1f} s after the last line"
