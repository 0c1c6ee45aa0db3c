"""Reduced precision on the embedded digits data: accuracy of float32, mixed bfloat16 (and
float16 where the backend runs it) training, and of int8 post-training quantisation.

Each training run is `keras-vit train --dataset digits` (the `make train` recipe) in its own
process; int8 is `model.quantize("int8")` applied to the float32 run's model, evaluated on the
same held-out test split.

    KERAS_BACKEND=tensorflow python benchmarks/precision.py --output runs/precision
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

QUANTIZE = """
import json, sys
import keras, numpy as np, tf_data, keras_vit
model = keras.saving.load_model(sys.argv[1], compile=False)
source = tf_data.load_source("digits")
config = tf_data.PipelineConfig(image_size=model.input_shape[1:3], batch_size=64)
test = tf_data.build_dataset(source, "test", config, training=False)
images, labels = map(np.concatenate, zip(*[(x, y) for x, y in test.as_numpy_iterator()]))
before = float(np.mean(np.argmax(model.predict(images, verbose=0), -1) == labels))
model.quantize("int8")
after = float(np.mean(np.argmax(model.predict(images, verbose=0), -1) == labels))
print(json.dumps({"float32": before, "int8": after, "examples": int(len(labels))}))
"""


def keras_vit_command():
    return [sys.executable, "-c", "import sys; from applications.cli import main; sys.exit(main())"]


def train(output, policy, extra):
    args = keras_vit_command() + ["train", "--dataset", "digits", "--output", output, "--verbose", "0"]
    if policy != "float32":
        args += ["--mixed-precision", policy]
    subprocess.run(args + extra, check=True, cwd=ROOT)
    with open(os.path.join(output, "metrics.json")) as f:
        return json.load(f)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="runs/precision")
    parser.add_argument("--policies", default="float32,bfloat16",
                        help="float32 first; add float16 on backends that run it on CPU")
    parser.add_argument("--extra", default="", help="more `keras-vit train` flags")
    args = parser.parse_args(argv)
    import keras

    results = {"backend": keras.backend.backend(), "runs": {}}
    for policy in args.policies.split(","):
        metrics = train(os.path.join(args.output, policy), policy, args.extra.split())
        results["runs"][policy] = {"test": metrics["test"], "epochs": metrics.get("epochs"),
                                   "train_time_s": metrics.get("train_time_s")}
    model = os.path.join(args.output, "float32", "model.keras")
    done = subprocess.run([sys.executable, "-c", QUANTIZE, model], check=True, cwd=ROOT,
                          capture_output=True, text=True)
    results["int8"] = json.loads(done.stdout.strip().splitlines()[-1])
    with open(os.path.join(args.output, "precision.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
