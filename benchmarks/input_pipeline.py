"""Input-pipeline throughput: keras-vit's `tf_data` against the loaders people write, in one run.

Measures images/s, in total and per CPU core, of
- the training pipeline: decode, inception crop (area 5-100%, aspect 3/4-4/3), horizontal
  flip, resize to 224, batches of 32;
- the evaluation pipeline: decode, resize the whole image to 224, batches of 32;
on two generated sets of JPEGs of ImageNet-like sizes, made independently of each other
(`--sets`): "crops" (`make_photos`: crops of scikit-learn's two sample photographs, 400-650 x
300-500 px, colour-shifted, quality 75-95) and "synthetic" (`make_synthetic_photos`:
procedural photographs, no source image, ~530 x 390 px, baseline 4:2:0, quality 80-96); each
as a folder and as TFDS-style records (a TFRecord of `tf.train.Example`s holding the encoded
JPEG bytes and a label, which is what TFDS stores and `SkipDecoding` hands out).

Contenders, measured interleaved in the same run (the order rotates each repeat), every
tf.data one with the same settings, keras-vit's defaults: the file read inside the map, the
map with `--workers` parallel calls (fixed, no AUTOTUNE), a private pool of `--workers`
threads, autotuning off, 2 batches prefetched; median over `--repeats`:
- keras-vit: `tf_data.build_dataset` with its defaults (JPEGs decoded only in the crop
  window);
- tf.data whole: the plain pipeline decoding whole JPEGs then cropping
  (`tf.image.sample_distorted_bounding_box`, `tf.slice`, `tf.image.resize`,
  `tf.image.random_flip_left_right`);
- tf.data crop: the same with `tf.image.extract_jpeg_shape` + `tf.io.decode_and_crop_jpeg`
  (what vit_jax and big_vision do);
- PIL threads / PIL processes: a PIL + NumPy loader as a PyTorch user writes it (torchvision's
  RandomResizedCrop and RandomHorizontalFlip on PIL images: crop, bilinear resize, flip, then a
  float32 batch), each worker making whole batches, `--workers` threads or processes with two
  batches per worker in flight (DataLoader's default prefetch);
- Keras: `keras.utils.image_dataset_from_directory` (whole images resized to 256 x 256) with
  Keras' `RandomCrop(224, 224)` and `RandomFlip` layers mapped over the batches; evaluation
  loads at 224 x 224 directly.

Per core: images/s divided by `--workers`. "img/CPU-s" is images per second of CPU time the
process (and its worker processes) used while timed: the rate per fully busy core.

Runs on Keras' TensorFlow backend (its layers map over a tf.data pipeline): KERAS_BACKEND
unset means tensorflow.

Usage:
    python benchmarks/input_pipeline.py                    # 400 images per set, 5 repeats
    python benchmarks/input_pipeline.py --json benchmarks/results/input_pipeline.json
    python benchmarks/input_pipeline.py --images 16 --batch-size 4 --image-size 32 \\
        --batches 2 --repeats 1                           # smoke test
    python benchmarks/input_pipeline.py --profile --images 200 --batches 20 --repeats 5
                                                          # CPU per image, per stage
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import math
import multiprocessing
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

AREA = (0.05, 1.0)
ASPECT = (3.0 / 4.0, 4.0 / 3.0)


# ----------------------------------------------------------------------------- data


def make_photos(root: str, count: int, classes: int = 4, seed: int = 0) -> list[tuple[str, int]]:
    """Writes `count` natural JPEGs of ImageNet-like sizes under root/c<k>/; returns (path, label)."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = load_sample_images().images  # china.jpg, flower.jpg: 427 x 640
    items = []
    for i in range(count):
        src = photos[i % len(photos)]
        height, width = src.shape[:2]
        out_w, out_h = int(rng.integers(400, 651)), int(rng.integers(300, 501))
        aspect = out_w / out_h
        area = rng.uniform(0.35, 1.0) * height * width
        crop_h = min(height, int(round(math.sqrt(area / aspect))))
        crop_w = min(width, int(round(crop_h * aspect)))
        y = int(rng.integers(0, height - crop_h + 1))
        x = int(rng.integers(0, width - crop_w + 1))
        image = Image.fromarray(src[y:y + crop_h, x:x + crop_w]).resize(
            (out_w, out_h), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        pixels = np.asarray(image, np.float32) / 255.0
        pixels = pixels ** rng.uniform(0.7, 1.4) * rng.uniform(0.8, 1.2, 3)  # gamma, colour cast
        pixels = np.clip(pixels * 255.0 + rng.uniform(-15, 15), 0, 255).astype(np.uint8)
        label = i % classes
        folder = os.path.join(root, f"c{label}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{i:05d}.jpg")
        Image.fromarray(pixels).save(path, "JPEG", quality=int(rng.integers(75, 96)))
        items.append((path, label))
    return items


def make_synthetic_photos(root: str, count: int, classes: int = 4,
                          seed: int = 1) -> list[tuple[str, int]]:
    """A second set, made independently of `make_photos`: procedural photographs (no source
    image) at ImageNet's typical sizes and encoding (means about 518 x 393 px, 85% landscape at
    4:3 or 3:2, baseline JPEG, 4:2:0 chroma, quality 80-96). Each is a 1/f^a colour-noise field
    (natural images' power spectrum, a from 1.6 to 2.4) under a light gradient, with 3-11 flat
    shapes and lines (sharp edges), a slight blur and sensor noise; writes root/c<k>/ and
    returns (path, label)."""
    from PIL import Image, ImageDraw, ImageFilter

    rng = np.random.default_rng(seed)
    items = []
    for i in range(count):
        if rng.random() < 0.85:
            width = int(np.clip(rng.normal(530, 35), 420, 640))
            height = int(round(width * rng.choice([0.75, 0.667])))
        else:
            height = int(np.clip(rng.normal(500, 35), 420, 640))
            width = int(round(height * rng.choice([0.75, 0.667])))
        fy, fx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
        radius = np.hypot(fx, fy)
        radius[0, 0] = 1.0
        alpha = rng.uniform(1.6, 2.4)
        spectrum = ((rng.standard_normal((3, *radius.shape))
                     + 1j * rng.standard_normal((3, *radius.shape))) / radius ** (alpha / 2))
        spectrum[:, 0, 0] = 0
        field = np.moveaxis(np.fft.irfft2(spectrum, s=(height, width)), 0, -1)
        field = field @ (np.eye(3) + 0.4 * rng.standard_normal((3, 3)))  # correlated colours
        field = (field - field.mean()) / (field.std() + 1e-9)
        pixels = rng.uniform(40, 200, 3) + field * rng.uniform(20, 45)
        yy, xx = np.mgrid[0:height, 0:width]
        angle = rng.uniform(0, 2 * np.pi)
        light = np.cos(angle) * xx / width + np.sin(angle) * yy / height
        pixels = pixels + light[..., None] * rng.uniform(-60, 60, 3)
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(3, 12))):
            colour = tuple(int(v) for v in rng.uniform(0, 255, 3))
            x0, y0 = rng.uniform(-0.2, 1.0) * width, rng.uniform(-0.2, 1.0) * height
            x1 = x0 + rng.uniform(0.05, 0.6) * width
            y1 = y0 + rng.uniform(0.05, 0.6) * height
            kind = rng.integers(3)
            if kind == 0:
                draw.ellipse((x0, y0, x1, y1), fill=colour)
            elif kind == 1:
                draw.polygon([(rng.uniform(x0, x1), rng.uniform(y0, y1))
                              for _ in range(int(rng.integers(3, 7)))], fill=colour)
            else:
                draw.line([(x0, y0), (x1, y1)], fill=colour, width=int(rng.integers(1, 9)))
        image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.5)))
        pixels = np.asarray(image, np.float32)
        pixels = pixels + rng.normal(0, rng.uniform(1, 6), pixels.shape)
        label = i % classes
        folder = os.path.join(root, f"c{label}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{i:05d}.jpg")
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(
            path, "JPEG", quality=int(rng.integers(80, 97)), subsampling="4:2:0",
            progressive=False, optimize=False)
        items.append((path, label))
    return items


SETS = {"crops": make_photos, "synthetic": make_synthetic_photos}


def write_records(items: list[tuple[str, int]], path: str) -> None:
    """The images as TFDS stores them: `tf.train.Example`s of encoded bytes and a label."""
    import tensorflow as tf

    with tf.io.TFRecordWriter(path) as writer:
        for file, label in items:
            with open(file, "rb") as f:
                feature = {
                    "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[f.read()])),
                    "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
                }
            example = tf.train.Example(features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())


def read_records(path: str):
    """Dataset of {"image": encoded bytes, "label": int64} from `write_records`' file."""
    import tensorflow as tf

    spec = {"image": tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64)}
    return tf.data.TFRecordDataset(path).map(lambda r: tf.io.parse_single_example(r, spec))


# ----------------------------------------------------------------------------- contenders


def keras_vit(args, items=None, records=None, training=True, **options):
    """`tf_data.build_dataset` on a folder split (paths) or a TFDS-style split (records)."""
    import tensorflow as tf

    import tf_data
    from tf_data import folder, pipeline, preprocess
    from tf_data.source import Source, Split

    if records is None:
        paths, labels = zip(*items)
        split = folder._file_split("train", list(paths), list(labels))
    else:
        split = Split(
            name="records", num_examples=args.images,
            make=lambda shard_index, num_shards, shuffle_seed=None: read_records(records),
            decode=lambda ex: (preprocess.decode_image(ex["image"]), tf.cast(ex["label"], tf.int32)),
            read=lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)),
        )
    source = Source(name="bench", kind="folder", class_names=("c0", "c1", "c2", "c3"),
                    splits={"train": split, "validation": split, "test": split})
    options = {"threads": args.workers, **options}
    config = tf_data.PipelineConfig(
        image_size=args.image_size, batch_size=args.batch_size, repeat=True,
        # records: read the file every pass, as the plain pipelines do (not cached in memory)
        cache="auto" if records is None else False, **options)
    # The same fixed map parallelism as every tf.data contender (the library's default is
    # one call per CPU core; --workers may differ).
    saved, pipeline._PARALLEL_CALLS = pipeline._PARALLEL_CALLS, args.workers
    try:
        ds = tf_data.build_dataset(source, "train", config, training=training)
    finally:
        pipeline._PARALLEL_CALLS = saved
    return ds if training else ds.repeat()


def _plain_options(args):
    """Every tf.data contender's settings, keras-vit's defaults: a private pool of `--workers`
    threads, autotuning off (on 2 cores its own work cost 14-19% of the images,
    benchmarks/RESULTS.md)."""
    import tensorflow as tf

    options = tf.data.Options()
    options.threading.private_threadpool_size = args.workers
    options.autotune.enabled = False
    return options


def tf_data_plain(args, items=None, records=None, training=True, crop_decode=False):
    """The tf.data pipeline a user writes from the TF guides (and vit_jax for `crop_decode`)."""
    import tensorflow as tf

    size = (args.image_size, args.image_size)
    if records is None:
        paths, labels = zip(*items)
        ds = tf.data.Dataset.from_tensor_slices((list(paths), list(labels)))
        read = tf.io.read_file  # inside the parallel map, as keras-vit reads
    else:
        ds = read_records(records).map(lambda ex: (ex["image"], ex["label"]))
        read = tf.identity
    if training:
        ds = ds.shuffle(args.images)
    ds = ds.repeat()

    def window(shape):
        begin, crop, _ = tf.image.sample_distorted_bounding_box(
            shape, tf.zeros([1, 0, 4], tf.float32), min_object_covered=0.0,
            aspect_ratio_range=ASPECT, area_range=AREA, max_attempts=100,
            use_image_if_no_bounding_boxes=True)
        return begin, crop

    def train(encoded, label):
        encoded = read(encoded)
        if crop_decode:
            begin, crop = window(tf.image.extract_jpeg_shape(encoded))
            image = tf.io.decode_and_crop_jpeg(
                encoded, tf.stack([begin[0], begin[1], crop[0], crop[1]]), channels=3)
        else:
            image = tf.io.decode_jpeg(encoded, channels=3)
            begin, crop = window(tf.shape(image))
            image = tf.slice(image, begin, crop)
        image = tf.image.resize(image, size)
        return tf.image.random_flip_left_right(image), label

    def evaluate(encoded, label):
        return tf.image.resize(tf.io.decode_jpeg(read(encoded), channels=3), size), label

    # The same fixed parallelism and prefetch as keras-vit's pipeline.
    ds = ds.map(train if training else evaluate, num_parallel_calls=args.workers)
    ds = ds.batch(args.batch_size, drop_remainder=True).prefetch(2)
    return ds.with_options(_plain_options(args))


def keras_layers(args, items, training=True):
    """`image_dataset_from_directory` plus Keras' RandomCrop and RandomFlip layers."""
    import keras
    import tensorflow as tf

    root = os.path.dirname(os.path.dirname(items[0][0]))
    size = args.image_size
    load = round(size * 256 / 224) if training else size
    ds = keras.utils.image_dataset_from_directory(
        root, image_size=(load, load), batch_size=args.batch_size, shuffle=training, seed=0,
        verbose=False)
    if training:
        augment = keras.Sequential([keras.layers.RandomCrop(size, size),
                                    keras.layers.RandomFlip("horizontal")])
        ds = ds.map(lambda x, y: (augment(x, training=True), y),
                    num_parallel_calls=args.workers)
    return ds.repeat().prefetch(2).with_options(_plain_options(args))


def pil_batch(paths, size, training, seed):
    """One float32 batch the torchvision way: RandomResizedCrop + RandomHorizontalFlip on PIL."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = np.empty((len(paths), size, size, 3), np.uint8)
    for k, path in enumerate(paths):
        with Image.open(path) as image:
            image = image.convert("RGB")
            if training:
                width, height = image.size
                box = None
                for _ in range(10):  # torchvision.transforms.RandomResizedCrop.get_params
                    area = height * width * rng.uniform(*AREA)
                    ratio = math.exp(rng.uniform(math.log(ASPECT[0]), math.log(ASPECT[1])))
                    w = int(round(math.sqrt(area * ratio)))
                    h = int(round(math.sqrt(area / ratio)))
                    if 0 < w <= width and 0 < h <= height:
                        i, j = rng.integers(0, height - h + 1), rng.integers(0, width - w + 1)
                        box = (j, i, j + w, i + h)
                        break
                image = image.resize((size, size), Image.Resampling.BILINEAR, box=box)
                if rng.random() < 0.5:
                    image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            else:
                image = image.resize((size, size), Image.Resampling.BILINEAR)
            out[k] = np.asarray(image)
    return out


class PILLoader:
    """Batches from a pool of `workers` threads or processes, 2 batches per worker in flight."""

    def __init__(self, args, items, training, processes):
        self.paths = [p for p, _ in items]
        self.args, self.training = args, training
        if processes:
            context = multiprocessing.get_context("spawn")  # never fork a TensorFlow process
            self.pool = concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=context)
        else:
            self.pool = concurrent.futures.ThreadPoolExecutor(args.workers)
        self.rng = np.random.default_rng(0)
        self.pending = collections.deque()

    def _submit(self):
        order = self.rng.permutation(len(self.paths))[: self.args.batch_size]
        paths = [self.paths[i] for i in order]
        self.pending.append(self.pool.submit(
            pil_batch, paths, self.args.image_size, self.training, int(self.rng.integers(2**31))))

    def __iter__(self):
        while len(self.pending) < 2 * self.args.workers:
            self._submit()
        while True:
            batch = self.pending.popleft().result()
            self._submit()
            yield batch.astype(np.float32)

    def close(self):
        self.pool.shutdown(cancel_futures=True)


# ----------------------------------------------------------------------------- timing


def cpu_seconds():
    """CPU time of this process and its live children (the process pool's workers)."""
    import psutil

    me = psutil.Process()
    total = sum(me.cpu_times()[:2])
    for child in me.children(recursive=True):
        try:
            total += sum(child.cpu_times()[:2])
        except psutil.Error:
            pass
    return total


def measure(iterator, args):
    """(images/s, images per CPU-second) over `--batches` batches after `--warmup`."""
    for _ in range(args.warmup):
        next(iterator)
    start, cpu = time.perf_counter(), cpu_seconds()
    for _ in range(args.batches):
        next(iterator)
    seconds, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    images = args.batches * args.batch_size
    return images / seconds, images / max(cpu, 1e-9)


def contenders(args, items, records, photos="crops"):
    """name -> factory of a fresh iterator plus its closer; names are
    contender/workload/data/set."""
    def tf_iter(make):
        def start():
            return iter(make()), None
        return start

    def pil(training, processes):
        def start():
            loader = PILLoader(args, items, training, processes)
            return iter(loader), loader.close
        return start

    table = {}
    for training, workload in ((True, "train"), (False, "eval")):
        table[f"keras-vit/{workload}/folder"] = tf_iter(
            lambda t=training: keras_vit(args, items=items, training=t))
        table[f"tf.data whole/{workload}/folder"] = tf_iter(
            lambda t=training: tf_data_plain(args, items=items, training=t))
        if training:
            table[f"tf.data crop/{workload}/folder"] = tf_iter(
                lambda: tf_data_plain(args, items=items, crop_decode=True))
        table[f"PIL threads/{workload}/folder"] = pil(training, processes=False)
        table[f"PIL processes/{workload}/folder"] = pil(training, processes=True)
        table[f"Keras layers/{workload}/folder"] = tf_iter(
            lambda t=training: keras_layers(args, items, training=t))
        table[f"keras-vit/{workload}/records"] = tf_iter(
            lambda t=training: keras_vit(args, records=records, training=t))
        table[f"tf.data whole/{workload}/records"] = tf_iter(
            lambda t=training: tf_data_plain(args, records=records, training=t))
        if training:
            table[f"tf.data crop/{workload}/records"] = tf_iter(
                lambda: tf_data_plain(args, records=records, crop_decode=True))
    for spec in args.variant:  # keras-vit with other options, e.g. "autotune=True"
        options = {k: eval(v, {}) for k, v in (kv.split("=", 1) for kv in spec.split(","))}
        for training, workload in ((True, "train"), (False, "eval")):
            table[f"keras-vit [{spec}]/{workload}/folder"] = tf_iter(
                lambda t=training, o=options: keras_vit(args, items=items, training=t, **o))
    table = {f"{name}/{photos}": start for name, start in table.items()}
    if args.only:
        table = {k: v for k, v in table.items() if any(s in k for s in args.only.split(","))}
    return table


def run(args) -> dict:
    import tensorflow as tf

    work = tempfile.mkdtemp(prefix="input_pipeline_")
    try:
        table, sizes = {}, {}
        for photos in args.sets.split(","):
            items = SETS[photos](os.path.join(work, photos), args.images)
            records = os.path.join(work, f"{photos}.tfrecord")
            write_records(items, records)
            table.update(contenders(args, items, records, photos))
            sizes[photos] = describe_set(items)
        rates = {name: [] for name in table}
        for repeat in range(args.repeats):
            names = list(table)
            shift = repeat % len(names)  # rotate the order: no contender always runs first
            for name in names[shift:] + names[:shift]:
                iterator, close = table[name]()
                try:
                    rates[name].append(measure(iterator, args))
                finally:
                    del iterator
                    if close:
                        close()
                print(f"  repeat {repeat + 1}: {name}: {rates[name][-1][0]:.0f} img/s",
                      file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = []
    for name, values in rates.items():
        contender, workload, data, photos = name.split("/")
        per_s = [v[0] for v in values]
        rows.append(dict(
            contender=contender, workload=workload, data=data, set=photos,
            img_s=statistics.median(per_s), img_s_all=per_s,
            per_core=statistics.median(per_s) / args.workers,
            img_cpu_s=statistics.median(v[1] for v in values),
            img_cpu_s_all=[v[1] for v in values],
        ))
    return dict(
        date=time.strftime("%Y-%m-%d"), machine=platform.processor() or platform.machine(),
        cpus=os.cpu_count(), workers=args.workers, images=args.images,
        batch_size=args.batch_size, image_size=args.image_size, batches=args.batches,
        repeats=args.repeats, sets=sizes, versions=dict(
            python=platform.python_version(), tensorflow=tf.__version__,
            pillow=__import__("PIL").__version__, numpy=np.__version__),
        rows=rows,
    )


def describe_set(items) -> dict:
    """Mean size and bytes of a generated set's JPEGs."""
    from PIL import Image

    sizes = []
    for path, _ in items:
        with Image.open(path) as image:
            sizes.append(image.size)
    return dict(mean_width=float(np.mean([w for w, _ in sizes])),
                mean_height=float(np.mean([h for _, h in sizes])),
                mean_bytes=float(np.mean([os.path.getsize(p) for p, _ in items])))


def markdown(result: dict) -> str:
    """The table, with each row's ratio to the keras-vit row of its workload, data and set, in
    images per second and per CPU-second (median over the repeats of the same-repeat ratios,
    and their min-max: the contenders of a repeat ran back to back; on a shared machine the
    CPU-second ratio is the steadier)."""
    rows = result["rows"]
    ours = {(r["workload"], r["data"], r["set"]): r for r in rows if r["contender"] == "keras-vit"}
    lines = ["| set | workload | data | contender | img/s (median, min-max) | per core "
             "| img/CPU-s | keras-vit / this, img/s (median, min-max) | the same, img/CPU-s |",
             "|---|---|---|---|---|---|---|---|---|"]

    def ratio(base, row, key):
        if base is None or key not in row:
            return ""
        ratios = [a / b for a, b in zip(base[key], row[key])]
        return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"

    for r in rows:
        base = ours.get((r["workload"], r["data"], r["set"]))
        lines.append(f"| {r['set']} | {r['workload']} | {r['data']} | {r['contender']} "
                     f"| {r['img_s']:.0f} ({min(r['img_s_all']):.0f}-{max(r['img_s_all']):.0f}) "
                     f"| {r['per_core']:.0f} | {r['img_cpu_s']:.0f} "
                     f"| {ratio(base, r, 'img_s_all')} | {ratio(base, r, 'img_cpu_s_all')} |")
    return "\n".join(lines)


def profile_stages(args) -> str:
    """Per-image CPU time of the training map's stages, cumulative, keras-vit's and the plain
    decode-and-crop pipeline's, on each set: one map call at a time on one thread (no
    parallelism to blur the sum), the files' bytes in memory (no disk), interleaved rounds
    (`--repeats`), median and min-max in microseconds of process CPU time per image."""
    import psutil
    import tensorflow as tf

    from tf_data import preprocess

    size = (args.image_size, args.image_size)

    def plain_window(encoded):
        begin, crop, _ = tf.image.sample_distorted_bounding_box(
            tf.image.extract_jpeg_shape(encoded), tf.zeros([1, 0, 4], tf.float32),
            min_object_covered=0.0, aspect_ratio_range=ASPECT, area_range=AREA,
            max_attempts=100, use_image_if_no_bounding_boxes=True)
        return tf.stack([begin[0], begin[1], crop[0], crop[1]])

    def plain(stage):
        def fn(encoded, drawn):
            window = plain_window(encoded)
            if stage == 1:
                return tf.cast(window, tf.float32)
            image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
            if stage == 2:
                return tf.cast(image[0, 0], tf.float32)
            image = tf.image.resize(image, size)
            return image if stage == 3 else tf.image.random_flip_left_right(image)
        return fn

    def ours(stage):
        def fn(encoded, drawn):
            pair = tf.stack([drawn, tf.constant(0, tf.int64)])
            crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(pair, 2))
            if stage == 0:
                return tf.cast(crop_seed, tf.float32)
            shape = tf.image.extract_jpeg_shape(encoded)
            window = preprocess.crop_window(shape, crop_seed, AREA, ASPECT)
            if stage == 1:
                return tf.cast(window, tf.float32)
            image = tf.cond(tf.io.is_jpeg(encoded),
                            lambda: preprocess.decode_jpeg_window(encoded, window, shape[1]),
                            lambda: tf.zeros([1, 1, 3], tf.uint8))
            if stage == 2:
                return tf.cast(image[0, 0], tf.float32)
            image = preprocess.resize(image, size)
            return image if stage == 3 else preprocess.random_flip(image, flip_seed)
        return fn

    stages = {
        "keras-vit: tf.data, seeds": ours(0),
        "keras-vit: + JPEG header, window": ours(1),
        "keras-vit: + decode window (+1 column each side, slice)": ours(2),
        "keras-vit: + cast, resize": ours(3),
        "keras-vit: + flip (the whole map)": ours(4),
        "plain crop: + JPEG header, window": plain(1),
        "plain crop: + decode_and_crop_jpeg": plain(2),
        "plain crop: + resize": plain(3),
        "plain crop: + flip (the whole map)": plain(4),
    }
    work = tempfile.mkdtemp(prefix="input_pipeline_")
    try:
        data = {}
        for photos in args.sets.split(","):
            items = SETS[photos](os.path.join(work, photos), args.images)
            data[photos] = []
            for path, _ in items:
                with open(path, "rb") as f:
                    data[photos].append(f.read())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    count = args.batches * args.batch_size

    def cost(fn, encoded):
        ds = tf.data.Dataset.zip(tf.data.Dataset.from_tensor_slices(encoded).repeat(),
                                 tf.data.Dataset.random(seed=0))
        options = tf.data.Options()
        options.threading.private_threadpool_size = 1
        options.autotune.enabled = False
        iterator = iter(ds.map(fn).prefetch(1).with_options(options))
        for _ in range(args.warmup * args.batch_size):
            next(iterator)
        me = psutil.Process()
        start = sum(me.cpu_times()[:2])
        for _ in range(count):
            next(iterator)
        return (sum(me.cpu_times()[:2]) - start) / count * 1e6

    times = {(photos, name): [] for photos in data for name in stages}
    for repeat in range(args.repeats):
        for photos, encoded in data.items():
            names = list(stages)
            names = names[repeat % len(names):] + names[:repeat % len(names)]
            for name in names:
                times[(photos, name)].append(cost(stages[name], encoded))
    lines = ["| set | stage (cumulative) | CPU us per image (median, min-max) |",
             "|---|---|---|"]
    for (photos, name), values in times.items():
        lines.append(f"| {photos} | {name} | {statistics.median(values):.0f} "
                     f"({min(values):.0f}-{max(values):.0f}) |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--batches", type=int, default=40, help="timed batches per measurement")
    parser.add_argument("--warmup", type=int, default=3, help="batches before timing")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sets", default="crops,synthetic",
                        help="JPEG sets: crops (of scikit-learn's photos), synthetic (procedural)")
    parser.add_argument("--only", default="", help="comma-separated substrings of contender names")
    parser.add_argument("--variant", action="append", default=[],
                        help="extra keras-vit rows with PipelineConfig options, e.g. autotune=True")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--profile", action="store_true",
                        help="per-image CPU time of the training map's stages instead")
    args = parser.parse_args(argv)
    if args.profile:
        print(profile_stages(args))
        return
    result = run(args)
    print(markdown(result))
    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
