"""`keras-vit train` and `keras-vit finetune`: one fit loop, two recipes."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time

import keras

import tf_data
from applications import callbacks as cb
from applications import config as config_lib
from applications import data as data_lib
from applications import distributed
from applications import memory, modeling, reporting
from applications.options import UsageError

EXIT_NAN = 3
BACKUP_DIR = "backup"
CHECKPOINT_FILE = "checkpoint.keras"
EVENTS_FILE = "events.jsonl"
LOG_CSV = "log.csv"


def run(config: config_lib.RunConfig, resume: bool = False, log=print,
        distribution: distributed.Options | None = None, batch_size_given: bool = True) -> int:
    """Trains (or fine-tunes) as `config` says; writes everything to config.output.

    Args:
        config: The resolved run configuration.
        resume: Continue from the last committed epoch in config.output.
        log: Where progress messages go.
        distribution: --strategy and cluster flags (default: one device). Only
            the chief process writes files; every process restores on --resume.
        batch_size_given: Whether the user chose config.batch_size; the recipe's default is
            reduced to fit a small dataset (with a message) instead of refused.

    Returns:
        Process exit code: 0 on success, `EXIT_NAN` when the loss diverged.
    """
    started = time.time()
    dist = distributed.setup(distribution, log)  # first: before any computation
    output = config.output
    backup_dir = os.path.join(output, BACKUP_DIR)
    try:
        state = cb.read_state(backup_dir)
        replace = bool(state) and not resume
        if replace:
            log(f"Starting afresh in {output}: removing the previous run's backup "
                "(use --resume to continue it instead).")
    except cb.UnusableBackup as e:
        if resume:
            raise cb.UnusableBackup(f"cannot --resume: {e} Start afresh without --resume "
                                    "(the backup is then replaced).") from None
        log(f"Starting afresh in {output}: replacing the previous run's unusable backup ({e})")
        replace = True
    if replace:
        if dist.is_chief:
            shutil.rmtree(backup_dir)
        state = {}
    dist.barrier("backup-cleared")  # no process may restore a removed backup
    initial_epoch = state.get("epoch", 0)
    if resume:
        log(f"Resuming from {output}: {initial_epoch} epoch(s) already completed."
            if state else f"--resume: no completed epoch in {output}; starting from epoch 1.")

    policy = modeling.set_mixed_precision(config.mixed_precision)
    source = data_lib.load_source(config)
    _describe_source(source, log)
    arch = config.architecture()
    image_size = modeling._pair(arch.get("image_size", 224))
    if not batch_size_given:
        config = _fit_default_batch_to(source, config, log)
    tf_data.check_batch_size(source, "train", config.batch_size)
    dist.check_batch_size(config.batch_size)
    memory.check_training_fits(arch, image_size, config.batch_size,
                               2 if policy.startswith("mixed") else 4, dist.num_replicas)

    keras.utils.set_random_seed(config.seed)
    # A resumed run gets a different data order than the first epochs had.
    data = data_lib.build_run_data(config, source, image_size, config.seed + 7919 * initial_epoch)
    plan = modeling.plan_training(
        config, tf_data.steps_per_epoch(source, "train", config.batch_size)
    )
    with dist.scope(arch):
        model = modeling.create_training_objects(config, arch, source.num_classes, plan, data.one_hot)
    if dist.is_chief:
        config_lib.save(config, extra={**_config_extras(config, arch, source, plan),
                                       "distribution": dist.describe()})
    log(f"Model {model.name}: {model.count_params():,} parameters, "
        f"{image_size[0]}x{image_size[1]} input; {plan.epochs} epochs x "
        f"{plan.steps_per_epoch} steps, batch {config.batch_size}, backend "
        f"{keras.backend.backend()}, dtype policy {policy}.")

    nan_guard = cb.StopOnNaN()
    backup = dist.backup(backup_dir, log_csv=os.path.join(output, LOG_CSV))
    callbacks = [
        nan_guard,  # first: a NaN batch stops before anything is saved
        backup,
        cb.AtomicModelCheckpoint(os.path.join(output, CHECKPOINT_FILE), every=config.checkpoint_every),
        cb.EpochEvents(os.path.join(output, EVENTS_FILE)),
    ]
    tensorboard = _tensorboard(os.path.join(output, "logs"), log)
    if tensorboard is not None:
        callbacks.append(tensorboard)
    callbacks = dist.callbacks(callbacks)  # only the chief writes
    train_ds = dist.train_input(data)
    val_ds = dist.eval_input(data, "validation")
    fit_started = time.time()
    dist.fit(
        model,
        train_ds,
        epochs=plan.epochs,
        steps_per_epoch=plan.steps_per_epoch,
        validation_data=val_ds,
        callbacks=callbacks,
        verbose=config.verbose,
        shuffle=False,  # the pipeline shuffles (seeded); Keras would only warn
    )
    fit_seconds = time.time() - fit_started
    history = backup.history

    metrics = {
        "status": "ok",
        "command": config.command,
        "backend": keras.backend.backend(),
        "dataset": config.dataset,
        "model": model.name,
        "architecture": arch,
        "parameters": int(model.count_params()),
        "image_size": list(image_size),
        "batch_size": config.batch_size,
        "dtype_policy": policy,
        "distribution": dist.describe(),
        "epochs": len(history),
        "epochs_planned": plan.epochs,
        "steps_per_epoch": plan.steps_per_epoch,
        "resumed_from_epoch": initial_epoch if resume else None,
        # Sum of the committed epochs' durations (training steps + validation,
        # across resumed runs), and the wall time of this process's fit()
        # call, which adds graph compilation and per-epoch checkpointing.
        "train_time_s": round(sum(h.get("seconds", 0.0) for h in history), 2),
        "fit_wall_time_s": round(fit_seconds, 2),
        "skipped_files": len(source.skipped_files),
        "history": history,
    }
    if nan_guard.stopped_at is not None:
        epoch, batch = nan_guard.stopped_at
        metrics["status"] = "nan"
        metrics["nan_at"] = {"epoch": epoch, "batch": batch}
        metrics["wall_time_s"] = round(time.time() - started, 2)
        if dist.is_chief:
            reporting.write_metrics(output, metrics)
            reporting.plot_curves(output, history, title=f"{model.name} on {config.dataset}")
        dist.shutdown()
        where = (f"{os.path.join(output, CHECKPOINT_FILE)} holds the last finite state "
                 f"(epoch {len(history)})" if history else "no epoch completed before it")
        print(f"ERROR: the training loss became NaN/inf at epoch {epoch}, batch {batch}; "
              f"training stopped ({where}). Lower --lr (now {config.lr:g}), keep "
              "--clipnorm 1.0, or check the data.", file=sys.stderr)
        return EXIT_NAN

    if dist.is_chief:
        cb.save_model_atomic(model, modeling.saved_model_path(output))
    if history:
        last = history[-1]
        metrics["train"] = {k: last[k] for k in ("loss", "accuracy", "top5_accuracy") if k in last}
    for role in ("validation", "test"):
        metrics[role] = dist.evaluate(model, data, role)  # collective on some strategies
    metrics["wall_time_s"] = round(time.time() - started, 2)
    dist.shutdown()
    if not dist.is_chief:
        return 0
    reporting.write_metrics(output, metrics)
    reporting.plot_curves(output, history, title=f"{model.name} on {config.dataset}")
    log(
        f"Done: {len(history)} epochs in {metrics['train_time_s']:.1f} s of training "
        f"({metrics['fit_wall_time_s']:.1f} s in fit with compilation and checkpoints). "
        f"test accuracy {metrics['test']['accuracy']:.4f} "
        f"(top-5 {metrics['test'].get('top5_accuracy', float('nan')):.4f}), "
        f"validation {metrics['validation']['accuracy']:.4f}. "
        f"Wrote {os.path.join(output, reporting.METRICS_FILE)}."
    )
    return 0


def resume_config(output: str, explicit: dict, log=print) -> config_lib.RunConfig:
    """The saved configuration of the run in `output`, for --resume.

    Flags given now that differ from the saved run are ignored, with a warning:
    a resumed run must continue the same optimisation.
    """
    saved = config_lib.load(output)
    config = config_lib.RunConfig.from_json(saved)
    config.output = output
    ignored = []
    for key, value in explicit.items():
        if key in ("output", "resume", "verbose"):
            continue
        old = getattr(config, key, None)
        if _normalise(old) != _normalise(value):
            ignored.append(f"--{key.replace('_', '-')} {value!r} (run uses {old!r})")
    if ignored:
        log("Warning: --resume continues the saved run; ignoring: " + "; ".join(ignored))
    if "verbose" in explicit:
        config.verbose = explicit["verbose"]
    return config


def _normalise(value):
    return json.loads(json.dumps(value, default=list))


def _config_extras(config, arch, source, plan) -> dict:
    """What evaluate/predict/finetune need to know about the run, beside the flags."""
    return {
        "architecture": arch,
        "num_classes": source.num_classes,
        "class_names": list(source.class_names),
        "split_note": source.split_note,
        "split_sizes": {r: s.num_examples for r, s in source.splits.items()},
        "steps_per_epoch": plan.steps_per_epoch,
        "epochs_planned": plan.epochs,
        "warmup_steps": plan.warmup_steps,
        "backend": keras.backend.backend(),
    }


def _tensorboard(log_dir: str, log):
    """The TensorBoard callback, or None (with a note) when it is not installed."""
    try:
        import tensorboard  # noqa: F401  (tf.summary needs it since TF 2.21)
    except ImportError:
        log("Note: the tensorboard package is not installed; no TensorBoard logs.")
        return None
    return keras.callbacks.TensorBoard(log_dir=log_dir)


def _describe_source(source: tf_data.Source, log) -> None:
    sizes = ", ".join(f"{r} {s.num_examples}" for r, s in source.splits.items())
    log(f"Dataset {source.name!r}: {source.num_classes} classes; {sizes} ({source.split_note}).")
    if source.skipped_files:
        shown = ", ".join(source.skipped_files[:5])
        more = f" and {len(source.skipped_files) - 5} more" if len(source.skipped_files) > 5 else ""
        log(f"Skipped {len(source.skipped_files)} unreadable image file(s): {shown}{more}.")


def _fit_default_batch_to(source, config, log):
    """The config with the recipe's batch size reduced for a training split that it exceeds:
    the largest power of two at most an eighth of the examples, so that an epoch has at least
    eight steps (a 400-image folder met the paper's batch of 512 first)."""
    examples = source.split("train").num_examples
    if config.batch_size <= examples:
        return config
    batch = 1 << max(0, (examples // 8).bit_length() - 1)
    log(f"The default batch size {config.batch_size} exceeds the {examples} training examples of "
        f"{source.name!r}; using {batch} (choose one with --batch-size).")
    return dataclasses.replace(config, batch_size=batch)


def check_not_usage(config: config_lib.RunConfig) -> None:
    """Errors for finetune without a starting point."""
    if config.command == "finetune" and not (config.weights or config.init):
        raise UsageError("finetune needs --weights (a .npz/.weights.h5/.keras file or name) "
                         "or --init (a saved .keras model).")
