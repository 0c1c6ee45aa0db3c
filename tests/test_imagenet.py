"""ImageNet class names shipped in the package, `decode_predictions`, and `keras-vit convert`."""

import argparse
import re

import keras
import numpy as np
import pytest

import keras_vit
from applications import convert
from keras_vit.imagenet import class_names

# Keras' imagenet_class_index.json convention: first WordNet lemma, spaces -> underscores.
KNOWN_1K = {
    0: ("n01440764", "tench"),
    1: ("n01443537", "goldfish"),
    2: ("n01484850", "great_white_shark"),
    207: ("n02099601", "golden_retriever"),
    386: ("n02504458", "African_elephant"),
    134: ("n02012849", "crane"),  # the bird ...
    517: ("n03126707", "crane"),  # ... and the machine
    999: ("n15075141", "toilet_tissue"),
}


def test_imagenet1k_names_follow_the_keras_class_index():
    names = class_names(1000)
    for index, pair in KNOWN_1K.items():
        assert names[index] == pair
    wnids = [wnid for wnid, _ in names]
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    assert all(" " not in name and name for _, name in names)


def test_imagenet21k_names_ship_compressed():
    names = class_names(21843)
    assert len({w for w, _ in names}) == 21843
    golden = [i for i, (w, _) in enumerate(names) if w == "n02099601"]
    assert len(golden) == 1 and names[golden[0]][1] == "golden_retriever"
    with pytest.raises(ValueError, match="1000 and 21843"):
        class_names(10)


def test_decode_predictions_top_k():
    preds = np.full((2, 1000), 1e-4, "float32")
    preds[0, [207, 1, 0]] = [0.7, 0.2, 0.05]
    preds[1, [999, 386]] = [0.6, 0.3]
    decoded = keras_vit.decode_predictions(keras.ops.convert_to_tensor(preds), top=3)
    assert [d[:2] for d in decoded[0]] == [KNOWN_1K[207], KNOWN_1K[1], KNOWN_1K[0]]
    assert decoded[0][0][2] == pytest.approx(0.7)
    assert [d[1] for d in decoded[1][:2]] == ["toilet_tissue", "African_elephant"]
    assert len(keras_vit.decode_predictions(preds)[0]) == 5


def test_decode_predictions_21k():
    preds = np.zeros((1, 21843), "float32")
    index = [w for w, _ in class_names(21843)].index("n01440764")
    preds[0, index] = 1.0
    assert keras_vit.decode_predictions(preds, top=1)[0][0] == ("n01440764", "tench", 1.0)


@pytest.mark.parametrize("shape", [(1000,), (2, 10), (1, 1000, 1)])
def test_decode_predictions_rejects_other_shapes(shape):
    with pytest.raises(ValueError, match=r"\(samples, 1000\) or \(samples, 21843\)"):
        keras_vit.decode_predictions(np.zeros(shape))


def test_decode_predictions_rejects_bad_top():
    with pytest.raises(ValueError, match="`top` must be >= 1"):
        keras_vit.decode_predictions(np.zeros((1, 1000)), top=0)


# --------------------------------------------------------------------------- keras-vit convert


def _parse(argv):
    parser = argparse.ArgumentParser()
    convert.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["convert", *argv])


def test_convert_official_npz_to_keras_weights(tmp_path, capsys):
    from keras_vit.weights.shapes import official_shapes

    arch = keras_vit.VARIANTS["ViTTi16"]
    rng = np.random.default_rng(0)
    arrays = {k: (0.05 * rng.standard_normal(s)).astype("float32")
              for k, s in official_shapes(**arch, image_size=64, classes=1000).items()}
    src, dst = tmp_path / "ti.npz", tmp_path / "out" / "ti.weights.h5"
    np.savez(src, **arrays)
    assert convert.run(_parse([str(src), str(dst), "--model", "ViT-Ti/16"])) == 0
    out = capsys.readouterr().out
    assert "keras_vit.ViTTi16(image_size=64, include_top=True, classes=1000, gelu_approximate=True" in out
    model = keras_vit.ViTTi16(image_size=64, weights=str(dst))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.get_layer("head").kernel),
                                  arrays["head/kernel"])
    # Refusals are usage errors (exit 2) with the reason on stderr.
    assert convert.run(_parse([str(src), str(dst), "--model", "ViTTi16"])) == 2
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert convert.run(_parse([str(src), str(tmp_path / "x.h5"), "--model", "ViTTi16"])) == 2
    assert "must end with .weights.h5" in capsys.readouterr().err
    assert convert.run(_parse([str(src), str(tmp_path / "y.weights.h5"), "--model", "ViTTi16",
                               "--classes", "10"])) == 2
    assert "`classes` must be 1000" in capsys.readouterr().err
    assert convert.run(_parse([str(src), str(tmp_path / "z.weights.h5"), "--model", "ViTS16"])) == 2
    assert "does not fit model" in capsys.readouterr().err
