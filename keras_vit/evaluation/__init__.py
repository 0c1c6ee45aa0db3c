"""Evaluations of frozen representations: few-shot linear (the paper's), linear probe, k-NN.

    result = keras_vit.evaluation.fewshot(model, (train_images, train_labels),
                                          (test_images, test_labels), shots=(1, 5, 10, 25))
    result[5]["mean"], result[5]["std"]          # over 3 draws of the shots

See docs/fine_tuning.md.
"""

from keras_vit.evaluation.fewshot import (
    L2_REG,
    SHOTS,
    LinearMap,
    fewshot_accuracy,
    lsr_fit,
    sample_shots,
)
from keras_vit.evaluation.frozen import extract, fewshot, representation_model
from keras_vit.evaluation.probes import (
    KNN_K,
    KNN_TEMPERATURE,
    knn_accuracy,
    knn_predict,
    linear_probe,
)

__all__ = ["L2_REG", "SHOTS", "KNN_K", "KNN_TEMPERATURE", "LinearMap", "extract", "fewshot",
           "fewshot_accuracy", "knn_accuracy", "knn_predict", "linear_probe", "lsr_fit",
           "representation_model", "sample_shots"]
