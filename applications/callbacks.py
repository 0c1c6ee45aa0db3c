"""Callbacks for crash-safe runs: committed backups, atomic checkpoints, NaN stop.

A run is killed (SIGKILL, preemption) at an arbitrary moment. The invariant
kept here: the files on disk always describe a whole number of completed
epochs. Each epoch's backup is written under a fresh name and only then
"committed" by atomically replacing one small JSON file that names it and
carries the epoch count and the per-epoch history; a kill before the commit
leaves the previous epoch's state in force, a kill after it the new one.
"""

from __future__ import annotations

import glob
import json
import math
import os
import time
import zipfile

import keras
import numpy as np

from applications.config import write_json_atomic
from applications.options import UsageError

STATE_FILE = "state.json"


class CommittedBackupAndRestore(keras.callbacks.BackupAndRestore):
    """`BackupAndRestore` whose saves are atomic, fast, and keep the history.

    State files in `backup_dir`: ``epoch-<n>.npz`` (every model variable,
    then every optimizer variable -- step counter, moments -- in their fixed
    order, after n completed epochs) and ``state.json`` =
    ``{"epoch": n, "weights": "epoch-<n>.npz", "history": [...]}``, replaced
    atomically. One `.npz` costs a few tens of milliseconds where Keras'
    `.weights.h5` costs ~0.2 s, which matters for runs of many short epochs.
    An epoch whose loss is not finite is not committed. The backup is kept
    after training so that `--resume` of a finished run is a no-op.

    Args:
        backup_dir: Directory of the state files (used by nothing else).
        log_csv: Optional CSV file rewritten from the committed history after
            every commit: one row per completed epoch, exactly.
    """

    def __init__(self, backup_dir: str, log_csv: str | None = None):
        super().__init__(backup_dir, save_freq="epoch", delete_checkpoint=False)
        self.log_csv = log_csv
        self._state_path = os.path.join(backup_dir, STATE_FILE)
        self._epoch_started = None
        self.history: list[dict] = read_state(backup_dir).get("history", [])

    def _variables(self) -> list:
        optimizer = self.model.optimizer
        return list(self.model.weights) + (list(optimizer.variables) if optimizer else [])

    # -- restore --------------------------------------------------------------
    def on_train_begin(self, logs=None):
        state = read_state(self.backup_dir)
        if not state:
            return
        if not self.model.built:
            raise ValueError("Build the model before fit() to restore a backup.")
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        path = os.path.join(self.backup_dir, state["weights"])
        with np.load(path) as archive:
            arrays = [archive[f"arr_{i}"] for i in range(len(archive.files))]
        variables = self._variables()
        shapes = [tuple(v.shape) for v in variables]
        if [a.shape for a in arrays] != shapes:
            raise ValueError(
                f"The backup {path} does not fit this model and optimizer "
                f"({len(arrays)} arrays vs {len(variables)} variables); was the run's "
                "configuration changed? Start afresh without --resume."
            )
        for variable, array in zip(variables, arrays):
            variable.assign(array)
        self.model._initial_epoch = state["epoch"]  # what BackupAndRestore does
        self.history = list(state.get("history", []))
        if self.log_csv:  # it may lag the commit by one epoch if killed in between
            write_history_csv(self.log_csv, self.history)

    # -- save -----------------------------------------------------------------
    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_started = time.time()

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        if not _finite(logs.get("loss")):
            return  # never commit a diverged state
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in logs.items()}}
        if self._epoch_started is not None:
            record["seconds"] = time.time() - self._epoch_started
        self._commit(epoch + 1, self.history + [record])

    def _commit(self, completed: int, history: list[dict]) -> None:
        os.makedirs(self.backup_dir, exist_ok=True)
        name = f"epoch-{completed}.npz"
        tmp = os.path.join(self.backup_dir, f"tmp-{os.getpid()}-{name}")
        arrays = [keras.ops.convert_to_numpy(v) for v in self._variables()]
        with open(tmp, "wb") as f:
            np.savez(f, *arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.backup_dir, name))
        # The commit point: from here on the new epoch counts as completed.
        write_json_atomic(self._state_path, {"epoch": completed, "weights": name, "history": history})
        self.history = history
        if self.log_csv:
            write_history_csv(self.log_csv, history)
        # Only now is the previous epoch's file unreferenced.
        for old in glob.glob(os.path.join(self.backup_dir, "*.npz")):
            if os.path.basename(old) != name:
                os.remove(old)

    def on_train_batch_end(self, batch, logs=None):
        pass  # epoch-level only

    def on_train_end(self, logs=None):
        pass  # keep the backup (see class docstring)


def write_history_csv(path: str, history: list[dict]) -> None:
    """Writes one CSV row per epoch record (columns: epoch, then sorted keys)."""
    import csv
    import io

    keys = sorted({k for h in history for k in h if k != "epoch"})
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for h in history:
        writer.writerow([h["epoch"], *(h.get(k, "") for k in keys)])
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(buffer.getvalue())
    os.replace(tmp, path)


class UnusableBackup(UsageError):
    """A backup directory whose state cannot be restored (the message names the file and why)."""


def read_state(backup_dir: str) -> dict:
    """The committed state of a backup directory, or {} when there is none.

    Raises:
        UnusableBackup: `state.json` is not the JSON this callback writes, or the weights file
            it names is missing or not a readable `.npz` (a truncated copy, say).
    """
    path = os.path.join(backup_dir, STATE_FILE)
    if not os.path.exists(path):
        return {}
    try:
        with open(path) as f:
            state = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UnusableBackup(f"Backup {path} is unreadable ({e}).") from None
    if not (isinstance(state, dict) and isinstance(state.get("epoch"), int)
            and isinstance(state.get("weights"), str)):
        raise UnusableBackup(f"Backup {path} lacks an integer 'epoch' and a 'weights' file name.")
    weights = os.path.join(backup_dir, state["weights"])
    if not os.path.exists(weights):
        raise UnusableBackup(f"Backup {path} names a missing weights file {state['weights']!r}.")
    try:  # reads the archive's directory: a truncated file has none
        with np.load(weights) as archive:
            archive.files  # noqa: B018
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise UnusableBackup(f"Backup weights {weights} are not a readable .npz ({e}).") from None
    return state


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Saves the whole model (`.keras`) after every finite epoch, atomically.

    Args:
        path: Target file, ending in ".keras".
        every: Save every this many epochs (and always after the last one).
    """

    def __init__(self, path: str, every: int = 1):
        super().__init__()
        self.path = path
        self.every = max(1, every)

    def on_epoch_end(self, epoch, logs=None):
        if not _finite((logs or {}).get("loss")):
            return
        last = epoch + 1 == self.params.get("epochs")
        if (epoch + 1) % self.every and not last:
            return
        save_model_atomic(self.model, self.path)


def save_model_atomic(model: keras.Model, path: str) -> None:
    """`model.save(path)` via a temporary file and `os.replace`."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{os.path.basename(path)}")
    model.save(tmp)
    _fsync_file(tmp)
    os.replace(tmp, path)


class StopOnNaN(keras.callbacks.TerminateOnNaN):
    """`TerminateOnNaN` that remembers where the loss became NaN or infinite."""

    def __init__(self):
        super().__init__()
        self.stopped_at: tuple[int, int] | None = None
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not _finite(loss) and self.stopped_at is None:
            self.stopped_at = (self._epoch + 1, batch + 1)
            self.model.stop_training = True


def _finite(value) -> bool:
    if value is None:
        return True
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


def _fsync_file(path: str) -> None:
    """Flushes a written file to disk before it is renamed into place."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


class EpochEvents(keras.callbacks.Callback):
    """Appends one JSON line per epoch begin/end to a log, with the process id.

    An operator's record of which process ran which epoch; the interruption
    test uses it to show that a resumed run redoes no completed epoch.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def _write(self, event: str, epoch: int, logs=None) -> None:
        record = {"event": event, "epoch": epoch + 1, "pid": os.getpid(), "time": time.time()}
        if logs:
            record["loss"] = float(logs.get("loss", float("nan")))
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def on_train_begin(self, logs=None):
        with open(self.path, "a") as f:
            f.write(json.dumps({"event": "train_begin", "pid": os.getpid(),
                                "initial_epoch": self.model._initial_epoch or 0,
                                "time": time.time()}) + "\n")

    def on_epoch_begin(self, epoch, logs=None):
        self._write("begin", epoch)

    def on_epoch_end(self, epoch, logs=None):
        self._write("end", epoch, logs)
