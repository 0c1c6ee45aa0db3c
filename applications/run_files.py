"""A run directory's files: OUTPUT/config.json read and written atomically. Below both
`applications.config` (the run's settings) and `applications.weights` (which reads a saved
run's architecture), so that those two depend one way."""

from __future__ import annotations

import json
import os
from typing import Any

from applications.options import UsageError

CONFIG_FILE = "config.json"


def load(directory: str) -> dict:
    """Reads DIRECTORY/config.json (the whole dict, including extra keys)."""
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.exists(path):
        raise UsageError(f"{path} not found: {directory!r} is not a keras-vit run directory.")
    with open(path) as f:
        return json.load(f)


def write_json_atomic(path: str, data: Any) -> None:
    """Writes JSON to a temporary file, then renames it over `path`.

    A reader (or a run killed mid-write) sees either the old or the new file,
    never half of one.
    """
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=_json_default)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return str(value)
