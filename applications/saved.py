"""Finding a saved model and what its run knew (dataset, classes, scaling)."""

from __future__ import annotations

import dataclasses
import os

import keras

from applications import config as config_lib
from applications.options import UsageError


@dataclasses.dataclass
class SavedRun:
    """A loaded model plus the run configuration saved next to it (may be {})."""

    model: keras.Model
    path: str
    run: dict

    @property
    def image_size(self) -> tuple[int, int]:
        """The input size; for a model of any size, the one its position embedding is stored
        at (what the programs resize to unless told to keep aspect ratios)."""
        shape = self.model.input_shape
        if None in shape[1:3]:
            from keras_vit import resolution  # noqa: PLC0415

            return resolution.stored_image_size(self.model)
        return int(shape[1]), int(shape[2])

    @property
    def include_preprocessing(self) -> bool:
        if "include_preprocessing" in self.run:
            return bool(self.run["include_preprocessing"])
        # A keras_vit model that rescales itself has this layer.
        return any(layer.name == "rescale" for layer in self.model.layers)

    @property
    def num_classes(self) -> int:
        return int(self.model.output_shape[-1])

    def class_names(self) -> list[str]:
        names = self.run.get("class_names")
        if names and len(names) == self.num_classes:
            return list(names)
        return [str(i) for i in range(self.num_classes)]


def load(output: str | None, model_path: str | None) -> SavedRun:
    """Loads OUTPUT/model.keras (or --model-path) and OUTPUT/config.json.

    Raises:
        UsageError: When neither is given or the model file is missing.
    """
    if not output and not model_path:
        raise UsageError("Give the run directory (--output DIR) or a model (--model-path FILE).")
    path = model_path or os.path.join(output, "model.keras")
    if not os.path.isfile(path):
        hint = ""
        if output and os.path.isfile(os.path.join(output, "checkpoint.keras")):
            hint = f" (the run is unfinished; its last epoch is in {output}/checkpoint.keras)"
        raise UsageError(f"No saved model at {path!r}{hint}.")
    run_dir = output or os.path.dirname(os.path.abspath(path))
    try:
        run = config_lib.load(run_dir)
    except UsageError:
        run = {}
    import keras_vit  # noqa: F401  (registers the layers for deserialisation)

    model = keras.saving.load_model(path, compile=False)
    return SavedRun(model=model, path=path, run=run)
