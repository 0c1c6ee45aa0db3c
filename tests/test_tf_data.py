"""Tests of the tf.data input pipeline: sources, preprocessing, batching, sharding.

Run per backend (KERAS_BACKEND=tensorflow|jax|torch); the pipeline itself is
pure TensorFlow, and `test_pipeline_feeds_model_fit` checks each backend's
`model.fit` consumes it.
"""

import io
import os

import numpy as np
import pytest
import tensorflow as tf

import tf_data
from tf_data import digits
from tf_data.holdout import stratified_holdout

SMALL = dict(image_size=(16, 16), batch_size=32, seed=3, crop_area=(0.5, 1.0))


def take(ds, n):
    return [(x.numpy(), y.numpy()) for x, y in ds.take(n)]


@pytest.fixture(scope="module")
def digits_source():
    return tf_data.load_source("digits")


# ----------------------------------------------------------------------------- digits


def test_digits_split_is_fixed_stratified_and_disjoint(digits_source):
    images, labels = digits.load_arrays()
    assert images.shape == (1797, 8, 8, 3) and images.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0
    assert np.array_equal(images[..., 0], images[..., 2])  # gray replicated to RGB
    sizes = {r: s.num_examples for r, s in digits_source.splits.items()}
    assert sizes == {"train": 1259, "validation": 179, "test": 359}
    idx = stratified_holdout(labels, 0.1, 0.2, seed=0)
    all_idx = np.concatenate(list(idx.values()))
    assert len(np.unique(all_idx)) == 1797  # disjoint and complete
    for role, expected in (("test", 0.2), ("validation", 0.1)):
        counts = np.bincount(labels[idx[role]], minlength=10)
        share = counts / np.bincount(labels, minlength=10)
        assert np.all(np.abs(share - expected) < 0.02), (role, share)
    # Independent of any training seed: a reload yields the same test set.
    again = stratified_holdout(labels, 0.1, 0.2, seed=0)
    assert np.array_equal(idx["test"], again["test"])
    assert digits_source.flip is False


# ----------------------------------------------------------------------------- pipeline


@pytest.mark.parametrize("include_preprocessing,low,high", [(True, 0.0, 255.0), (False, -1.0, 1.0)])
def test_train_batches_shapes_dtypes_ranges(digits_source, include_preprocessing, low, high):
    config = tf_data.PipelineConfig(**SMALL, include_preprocessing=include_preprocessing)
    ds = tf_data.build_dataset(digits_source, "train", config, training=True)
    assert ds.element_spec[0].shape.as_list() == [32, 16, 16, 3]  # static: drop_remainder
    assert ds.element_spec[0].dtype == tf.float32 and ds.element_spec[1].dtype == tf.int32
    batches = take(ds, 5)
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    assert x.min() >= low - 1e-6 and x.max() <= high + 1e-6
    assert x.max() - x.min() > 0.9 * (high - low)  # really spans the range
    assert set(np.unique(y)) <= set(range(10)) and len(np.unique(y)) == 10


def test_eval_keeps_every_example_in_order(digits_source):
    config = tf_data.PipelineConfig(**SMALL)
    ds = tf_data.build_dataset(digits_source, "test", config, training=False)
    labels = np.concatenate([y for _, y in take(ds, 100)])
    images, all_labels = digits.load_arrays()
    idx = stratified_holdout(all_labels, 0.1, 0.2, seed=0)["test"]
    assert np.array_equal(labels, all_labels[idx])
    # Eval preprocessing is a plain resize: the first image matches TF's resize.
    x0 = next(iter(ds))[0][0].numpy()
    expected = tf.image.resize(tf.cast(images[idx[0]], tf.float32), (16, 16)).numpy()
    np.testing.assert_allclose(x0, expected, atol=1e-4)


def test_same_seed_same_batches_other_seed_differs(digits_source):
    def first(seed):
        config = tf_data.PipelineConfig(**{**SMALL, "seed": seed})
        return take(tf_data.build_dataset(digits_source, "train", config, training=True), 3)

    a, b, c = first(3), first(3), first(4)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][1], c[0][1])


def test_epochs_are_reshuffled_and_reaugmented(digits_source):
    # With repeat, consecutive passes see new orders and new crops.
    config = tf_data.PipelineConfig(**{**SMALL, "batch_size": 1259}, repeat=True)
    ds = tf_data.build_dataset(digits_source, "train", config, training=True)
    (x1, y1), (x2, y2) = take(ds, 2)
    assert not np.array_equal(y1, y2)
    assert np.array_equal(np.sort(y1), np.sort(y2))  # each pass: every example once


def test_mixup_cutmix_give_soft_one_hot_labels(digits_source):
    config = tf_data.PipelineConfig(**SMALL, mixup_alpha=0.4, cutmix_alpha=1.0)
    assert config.uses_one_hot
    ds = tf_data.build_dataset(digits_source, "train", config, training=True)
    x, y = take(ds, 1)[0]
    assert x.shape == (32, 16, 16, 3) and y.shape == (32, 10) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(axis=1), 1.0, atol=1e-5)
    assert (y.max(axis=1) < 0.999).any()  # some labels really are mixed
    assert 0.0 <= x.min() and x.max() <= 255.0
    # Seeded Keras layers: reproducible too.
    x2, y2 = take(tf_data.build_dataset(digits_source, "train", config, training=True), 1)[0]
    np.testing.assert_array_equal(y, y2)
    np.testing.assert_allclose(x, x2, atol=1e-4)
    # Evaluation keeps hard one-hot labels with the same format.
    ev = tf_data.build_dataset(digits_source, "test", config, training=False)
    _, ye = take(ev, 1)[0]
    assert ye.shape[1] == 10 and set(np.unique(ye)) == {0.0, 1.0}


@pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "tensorflow") == "jax",
    reason="tracing Keras' RandAugment in tf.data takes ~30 s once under JAX; same TF graph",
)
def test_randaugment_changes_images_within_range(digits_source):
    plain = tf_data.PipelineConfig(**SMALL)
    augmented = tf_data.PipelineConfig(**SMALL, randaugment=(2, 0.9))
    (xa, ya), = take(tf_data.build_dataset(digits_source, "train", plain, training=True), 1)
    (xb, yb), = take(tf_data.build_dataset(digits_source, "train", augmented, training=True), 1)
    np.testing.assert_array_equal(ya, yb)  # same order and crops; only RandAugment differs
    changed = np.abs(xa - xb).reshape(len(xa), -1).max(axis=1) > 1.0
    assert changed.mean() > 0.5
    assert xb.min() >= 0.0 and xb.max() <= 255.0


def test_batch_transform_hook_is_applied(digits_source):
    seen = []

    def invert(batch):  # stands in for e.g. a keras-cv layer
        seen.append(True)
        return {"images": 255.0 - batch["images"], "labels": batch["labels"]}

    plain = tf_data.PipelineConfig(**SMALL)
    hooked = tf_data.PipelineConfig(**SMALL, batch_transforms=(invert,))
    (xa, ya), = take(tf_data.build_dataset(digits_source, "train", plain, training=True), 1)
    (xb, yb), = take(tf_data.build_dataset(digits_source, "train", hooked, training=True), 1)
    assert seen
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_allclose(xb, 255.0 - xa, atol=1e-4)


def test_sharding_by_input_context_and_process(digits_source):
    config = tf_data.PipelineConfig(**SMALL)
    labels = []
    for i in range(2):
        ctx = tf.distribute.InputContext(
            num_input_pipelines=2, input_pipeline_id=i, num_replicas_in_sync=2
        )
        fn = tf_data.make_dataset_fn(digits_source, "test", config, training=False)
        ds = fn(ctx)
        first = next(iter(ds))
        assert first[0].shape[0] == 16  # per-replica batch = global 32 // 2
        labels.append(np.concatenate([y for _, y in take(ds, 100)]))
        train = tf_data.make_dataset_fn(digits_source, "train", config, training=True)(ctx)
        assert train.element_spec[0].shape[0] == 16
    assert len(labels[0]) + len(labels[1]) == 359
    full = np.concatenate([y for _, y in take(tf_data.build_dataset(
        digits_source, "test", config, training=False), 100)])
    np.testing.assert_array_equal(np.sort(np.concatenate(labels)), np.sort(full))
    # Process sharding: the same split of examples, batch per process.
    p1 = tf_data.build_dataset(digits_source, "test", config, training=False,
                               process_index=1, process_count=2)
    np.testing.assert_array_equal(np.concatenate([y for _, y in take(p1, 100)]), labels[1])
    with pytest.raises(tf_data.DataError, match="not divisible by the 3 processes"):
        tf_data.build_dataset(digits_source, "train", config, training=True,
                              process_index=0, process_count=3)


def test_pipeline_feeds_model_fit(digits_source):
    import keras

    keras.utils.set_random_seed(0)
    config = tf_data.PipelineConfig(image_size=(8, 8), batch_size=64, crop_area=None)
    train = tf_data.build_dataset(digits_source, "train", config, training=True)
    test = tf_data.build_dataset(digits_source, "test", config, training=False)
    model = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255.0), keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train, epochs=3, steps_per_epoch=19, verbose=0, shuffle=False)
    accuracy = model.evaluate(test, verbose=0, return_dict=True)["accuracy"]
    assert accuracy > 0.85  # a linear model on digits, fed by the pipeline, learns


# ----------------------------------------------------------------------------- errors


def test_errors_are_clear(digits_source):
    config = tf_data.PipelineConfig(image_size=8, batch_size=2000)
    with pytest.raises(tf_data.DataError, match=r"Batch size 2000 is larger than the 1259"):
        tf_data.build_dataset(digits_source, "train", config, training=True)
    with pytest.raises(tf_data.DataError, match=r"'digits'.*Did you mean: cifar10"):
        tf_data.load_source("cifar11")
    with pytest.raises(tf_data.DataError, match="does not exist"):
        tf_data.load_source("/no/such/folder")
    with pytest.raises(tf_data.DataError, match="valid splits: train, validation, test"):
        digits_source.split("dev")


# ----------------------------------------------------------------------------- folders


def _image_bytes(array, fmt, mode=None):
    from PIL import Image

    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _make_folder(root, classes=("cat", "dog", "emu"), per_class=10):
    rng = np.random.default_rng(0)
    formats = [("jpg", "JPEG", None), ("png", "PNG", "RGBA"), ("bmp", "BMP", "L"),
               ("gif", "GIF", "P"), ("jpeg", "JPEG", "L"), ("png", "PNG", "LA"),
               ("webp", "WEBP", None)]
    for c, name in enumerate(classes):
        os.makedirs(root / name)
        for i in range(per_class):
            ext, fmt, mode = formats[i % len(formats)]
            shape = (12 + i, 10 + 2 * c, 3)
            array = np.full(shape, 40 + 80 * c, np.uint8) + rng.integers(0, 20, shape, dtype=np.uint8)
            (root / name / f"{i}.{ext}").write_bytes(_image_bytes(array, fmt, mode))
    return root


def test_folder_source_skips_and_counts_unreadable_files(tmp_path):
    root = _make_folder(tmp_path / "imgs")
    (root / "cat" / "corrupt.jpg").write_bytes(b"this is not a jpeg")
    good = _image_bytes(np.zeros((20, 20, 3), np.uint8), "PNG")
    (root / "dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    (root / "dog" / "notes.txt").write_text("ignored: not an image extension")
    source = tf_data.load_source(str(root))
    assert source.class_names == ("cat", "dog", "emu")
    assert sorted(os.path.basename(p) for p in source.skipped_files) == ["corrupt.jpg", "truncated.png"]
    sizes = {r: s.num_examples for r, s in source.splits.items()}
    assert sum(sizes.values()) == 30 and sizes["test"] == 6 and sizes["validation"] == 3
    config = tf_data.PipelineConfig(image_size=(8, 8), batch_size=4, seed=0)
    x, y = take(tf_data.build_dataset(source, "train", config, training=True), 1)[0]
    assert x.shape == (4, 8, 8, 3) and x.dtype == np.float32
    ev = tf_data.build_dataset(source, "test", config, training=False)
    xs, ys = zip(*take(ev, 10))
    xs, ys = np.concatenate(xs), np.concatenate(ys)
    assert len(ys) == 6 and sorted(np.bincount(ys)) == [2, 2, 2]
    # Class c was drawn around gray level 40 + 80c (gray/RGBA/palette all -> RGB).
    for cls in range(3):
        mean = xs[ys == cls].mean()
        assert abs(mean - (49.5 + 80 * cls)) < 12, (cls, mean)


def test_folder_with_split_subfolders(tmp_path):
    _make_folder(tmp_path / "data" / "train", per_class=6)
    _make_folder(tmp_path / "data" / "test", per_class=2)
    source = tf_data.load_source(str(tmp_path / "data"))
    sizes = {r: s.num_examples for r, s in source.splits.items()}
    assert sizes["test"] == 6 and sizes["train"] + sizes["validation"] == 18
    assert sizes["validation"] == 3


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(tf_data.DataError, match="has 0 class sub-folder"):
        tf_data.load_source(str(tmp_path / "empty"))
    _make_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(tf_data.DataError, match=r"1 class sub-folder\(s\) \(only\).*at least 2"):
        tf_data.load_source(str(tmp_path / "one"))
    (tmp_path / "noimg" / "a").mkdir(parents=True)
    (tmp_path / "noimg" / "b").mkdir()
    (tmp_path / "noimg" / "a" / "x.jpg").write_bytes(b"junk")
    with pytest.raises(tf_data.DataError, match="no readable images"):
        tf_data.load_source(str(tmp_path / "noimg"))


# ----------------------------------------------------------------------------- TFDS


def test_tfds_source_through_mock_data():
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=40):
        source = tf_data.load_source("cifar10")
        assert source.kind == "tfds" and source.num_classes == 10
        # Offline, cifar10's label names are not in its metadata: indices.
        assert len(source.class_names) == 10 and all(isinstance(n, str) for n in source.class_names)
        assert source.split("train").num_examples == 40
        assert "test" in source.split("test").name
        config = tf_data.PipelineConfig(image_size=(24, 24), batch_size=8, seed=1)
        x, y = take(tf_data.build_dataset(source, "train", config, training=True), 1)[0]
        assert x.shape == (8, 24, 24, 3) and x.dtype == np.float32
        assert 0.0 <= x.min() and x.max() <= 255.0 and x.std() > 10  # random mock pixels
        assert y.dtype == np.int32 and ((0 <= y) & (y < 10)).all()
        x2, y2 = take(tf_data.build_dataset(source, "train", config, training=True), 1)[0]
        np.testing.assert_array_equal(x, x2)
        ev = tf_data.build_dataset(source, "test", config, training=False)
        assert sum(len(b[1]) for b in take(ev, 100)) == 40
        # Shards read a TFDS sub-split (mock data ignores slicing, so check
        # which split was asked for).
        asked = []
        original = tfds.core.DatasetBuilder.as_dataset

        def recording(self, *args, **kwargs):
            asked.append(str(kwargs.get("split")))
            return original(self, *args, **kwargs)

        tfds.core.DatasetBuilder.as_dataset = recording
        try:
            ctx = tf.distribute.InputContext(2, 1, 2)
            shard = tf_data.make_dataset_fn(source, "test", config, training=False)(ctx)
            assert next(iter(shard))[0].shape[0] == 4
        finally:
            tfds.core.DatasetBuilder.as_dataset = original
        assert asked == [str(tfds.even_splits("test", n=2)[1])]
