"""The engines behind `--strategy` (see applications/distributed.py and docs/distributed.md).

Each class wraps one engine's distribution for the training program: where
the model is created, what input each process reads, how `fit` and
`evaluate` run, and which process writes.
"""

from __future__ import annotations

import contextlib
import json
import os
import types

import keras

from applications import callbacks as cb
from applications.distributed_options import Options
from applications.options import UsageError


class Distributed:
    """No distribution: one process, one device. Base class of the strategies."""

    name = "none"

    def __init__(self, options: Options, log=print):
        self.options = options
        self.log = log
        self.process_index = 0
        self.process_count = 1

    @property
    def is_chief(self) -> bool:
        """Whether this process writes the run's files."""
        return self.process_index == 0

    @property
    def num_replicas(self) -> int:
        return 1

    def describe(self) -> dict:
        """What the run directory's config.json records about the distribution."""
        return {"strategy": self.name, "processes": self.process_count,
                "replicas": self.num_replicas}

    def check_batch_size(self, batch_size: int) -> None:
        for what, n in (("replicas", self.num_replicas), ("processes", self.process_count)):
            if batch_size % n:
                raise UsageError(
                    f"--batch-size {batch_size} (global) is not divisible by the {n} {what} of "
                    f"--strategy {self.name}; use a multiple of {n}."
                )

    def scope(self, arch: dict):
        """Context in which to create the model, optimizer and metrics."""
        return contextlib.nullcontext()

    def train_input(self, data):
        """The training input for `fit`: this process's pipeline."""
        return data.dataset("train", training=True)

    def eval_input(self, data, role: str):
        """An evaluation input for `fit(validation_data=)` / `evaluate`."""
        return data.dataset(role)

    def backup(self, backup_dir: str, log_csv: str | None) -> cb.CommittedBackupAndRestore:
        """The --resume backup: the chief's commits; other processes only restore."""
        if self.is_chief:
            return cb.CommittedBackupAndRestore(backup_dir, log_csv=log_csv)
        return WorkerBackup(backup_dir)

    def callbacks(self, callbacks: list) -> list:
        """The callbacks this process runs: writers only on the chief."""
        if self.is_chief:
            return list(callbacks)
        writers = (cb.AtomicModelCheckpoint, cb.EpochEvents, keras.callbacks.TensorBoard)
        return [c for c in callbacks if not isinstance(c, writers)]

    def fit(self, model, train, **kwargs):
        build_before_fit(model, train)
        return model.fit(train, **kwargs)

    def evaluate(self, model, data, role: str) -> dict:
        result = model.evaluate(self.eval_input(data, role), verbose=0, return_dict=True)
        return {k: float(v) for k, v in result.items()}

    def barrier(self, name: str = "barrier") -> None:
        """Waits until every process gets here."""

    def shutdown(self) -> None:
        """Leaves the distributed runtime (end of the program)."""


def build_before_fit(model, dataset) -> None:
    """Builds the compiled loss and metrics from the dataset's element spec.

    Otherwise `model.fit` (JAX, torch) draws a batch from a first iterator of
    the training dataset to build them, then trains on a second one. Both
    share the pipeline's reshuffling seeds, which the first iterator's
    background prefetch may advance into the next pass: the training order
    would then depend on timing. Built beforehand, fit creates one iterator
    and trains on the pipeline's first pass order, every time.
    """
    import tensorflow as tf

    if isinstance(dataset, tf.data.Dataset):
        model._symbolic_build(data_batch=dataset.element_spec)


class WorkerBackup(cb.CommittedBackupAndRestore):
    """A non-chief process's backup: restores the chief's last commit, never writes."""

    def __init__(self, backup_dir: str):
        super().__init__(backup_dir, log_csv=None)

    def _commit(self, completed: int, history: list[dict]) -> None:
        self.history = history


# -- TensorFlow ----------------------------------------------------------------------------

class TFStrategy(Distributed):
    """`MirroredStrategy` / `TPUStrategy` (and `MultiWorkerMirroredStrategy`, below).

    Training runs the model's own `train_step` (its loss, optimizer and
    metrics) under `strategy.run`, in a loop that drives the same callbacks as
    `model.fit`, rather than through `model.fit` itself, which under these
    strategies (Keras 3.15):
      - fails with several workers (keras-team/keras#20585, "Attempt to
        convert a value (PerReplica ...) with an unsupported type"), and
      - draws one batch for a symbolic build and then restarts the dataset, so
        a reshuffling pipeline trains on another order than on one device.
    Each input pipeline reads its shard and batches global // replicas
    (`distribute_datasets_from_function`).
    """

    def __init__(self, options: Options, log=print):
        super().__init__(options, log)
        import tensorflow as tf

        self.name = options.strategy
        if self.name == "tpu":
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=options.tpu or "local")
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            self.strategy = tf.distribute.TPUStrategy(resolver)
        else:
            self.strategy = self._create()
        self._test_fn = None
        self.log(f"Distribution: {self.name}, {self.strategy.num_replicas_in_sync} replica(s) "
                 f"{self._devices()}.")

    def _create(self):
        import tensorflow as tf

        return tf.distribute.MirroredStrategy()

    def _devices(self):
        return list(getattr(self.strategy.extended, "worker_devices", ()))

    @property
    def num_replicas(self) -> int:
        return self.strategy.num_replicas_in_sync

    def scope(self, arch: dict):
        return self.strategy.scope()

    def train_input(self, data):
        return self.strategy.distribute_datasets_from_function(data.dataset_fn("train", True))

    def eval_input(self, data, role: str):
        return self.strategy.distribute_datasets_from_function(data.dataset_fn(role, False))

    def fit(self, model, train, *, epochs, steps_per_epoch, validation_data=None,
            callbacks=(), verbose="auto", **unused):
        """`model.fit`'s epoch loop with `strategy.run(model.train_step)` per batch."""
        import tensorflow as tf

        strategy = self.strategy
        verbose = 1 if verbose == "auto" else verbose
        callback_list = keras.callbacks.CallbackList(
            list(callbacks), add_history=True, add_progbar=bool(verbose), model=model,
            verbose=verbose, epochs=epochs, steps=steps_per_epoch,
        )
        with strategy.scope():
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)
        reduce_gradients_before_clipping(model.optimizer, strategy)

        @tf.function
        def train_step(iterator):
            outputs = strategy.run(model.train_step, args=(next(iterator),))
            # Every replica has the same batch size: the mean of the replicas'
            # running means is the global running mean.
            return {k: strategy.reduce("MEAN", v, axis=None) for k, v in outputs.items()}

        model.stop_training = False
        model._initial_epoch = None
        callback_list.on_train_begin()
        initial_epoch = model._initial_epoch or 0  # set by the backup on --resume
        iterator = iter(train)
        logs = {}
        for epoch in range(initial_epoch, epochs):
            model.reset_metrics()
            callback_list.on_epoch_begin(epoch)
            for step in range(steps_per_epoch):
                callback_list.on_train_batch_begin(step)
                logs = {k: float(v) for k, v in train_step(iterator).items()}
                callback_list.on_train_batch_end(step, logs)
                if model.stop_training:
                    break
            epoch_logs = dict(logs)
            if validation_data is not None and not model.stop_training:
                val = self._evaluate(model, validation_data)
                epoch_logs.update({f"val_{k}": v for k, v in val.items()})
            callback_list.on_epoch_end(epoch, epoch_logs)
            if model.stop_training:
                break
        callback_list.on_train_end(logs)

    def _evaluate(self, model, dataset) -> dict:
        import tensorflow as tf

        strategy = self.strategy
        if self._test_fn is None:
            @tf.function(reduce_retracing=True)  # the last batch may be smaller
            def test_step(batch):
                strategy.run(model.test_step, args=(batch,))

            self._test_fn = test_step
        model.reset_metrics()
        # Iterating a distributed dataset keeps the replicas and workers in
        # step to the end of the longest shard (the others get empty batches).
        for batch in dataset:
            self._test_fn(batch)
        # Metric variables sum their replicas' totals and counts when read
        # here: exact global means over the whole split.
        return {k: float(v) for k, v in model.get_metrics_result().items()}

    def evaluate(self, model, data, role: str) -> dict:
        return self._evaluate(model, self.eval_input(data, role))

    def barrier(self, name: str = "barrier") -> None:
        import tensorflow as tf

        if self.process_count > 1:  # an all-reduce over every worker
            self.strategy.reduce("SUM", self.strategy.run(lambda: tf.ones(())), axis=None)


def reduce_gradients_before_clipping(optimizer, strategy) -> None:
    """Clips the summed gradient, not each replica's share, under tf.distribute.

    Keras' TensorFlow optimizer clips (`global_clipnorm`, `clipnorm`,
    `clipvalue`) each replica's gradient and sums them over replicas after; a
    global norm clip then differs from one device's. Here the sum comes first
    (one all-reduce, as before) and the clip applies to the global gradient.
    """
    import tensorflow as tf

    # A LossScaleOptimizer (mixed float16) or GroupedOptimizer clips in its inner optimizer.
    while hasattr(optimizer, "inner_optimizer"):
        optimizer = optimizer.inner_optimizer
    if strategy.num_replicas_in_sync < 2 or getattr(optimizer, "_reduces_before_clip", False):
        return
    if not (optimizer.global_clipnorm or optimizer.clipnorm or optimizer.clipvalue):
        return
    clip = optimizer._clip_gradients

    def clip_global(grads):
        context = tf.distribute.get_replica_context()
        if context is not None:  # in strategy.run: sum over replicas, then clip
            grads = context.all_reduce(tf.distribute.ReduceOp.SUM, list(grads))
        return clip(grads)

    optimizer._clip_gradients = clip_global
    optimizer._all_reduce_sum_gradients = lambda grads_and_vars: list(grads_and_vars)
    optimizer._reduces_before_clip = True


class TFMultiWorker(TFStrategy):
    """`MultiWorkerMirroredStrategy`: one process per host, the cluster in TF_CONFIG."""

    def _create(self):
        import tensorflow as tf

        o = self.options
        if o.job_addresses and o.job_addresses != "auto":
            workers = [a.strip() for a in o.job_addresses.split(",") if a.strip()]
            if len(workers) < 2 and not o.num_processes:
                raise UsageError("--strategy multi_worker: --job-addresses must list every "
                                 "worker's host:port (or set TF_CONFIG).")
            if o.num_processes is not None and o.num_processes != len(workers):
                raise UsageError(f"--num-processes {o.num_processes} but --job-addresses lists "
                                 f"{len(workers)} workers.")
            if o.process_id is None or not 0 <= o.process_id < len(workers):
                raise UsageError(f"--strategy multi_worker needs --process-id in 0..{len(workers) - 1}.")
            os.environ["TF_CONFIG"] = json.dumps({
                "cluster": {"worker": workers},
                "task": {"type": "worker", "index": o.process_id},
            })
        elif "TF_CONFIG" not in os.environ:
            raise UsageError("--strategy multi_worker needs TF_CONFIG, or --job-addresses "
                             "HOST:PORT,HOST:PORT,... and --process-id.")
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        resolver = strategy.cluster_resolver
        spec = resolver.cluster_spec().as_dict()
        self.process_count = sum(len(v) for k, v in spec.items() if k in ("chief", "worker"))
        # The chief: task "chief", else worker 0 (TF's convention).
        if "chief" in spec:
            self.process_index = 0 if resolver.task_type == "chief" else resolver.task_id + 1
        else:
            self.process_index = resolver.task_id or 0
        return strategy

    def _devices(self):
        return [f"worker {self.process_index} of {self.process_count}"]


# -- JAX -----------------------------------------------------------------------------------

class JaxDistribution(Distributed):
    """`keras.distribution.DataParallel` / `ModelParallel`, one or several processes."""

    def __init__(self, options: Options, log=print):
        super().__init__(options, log)
        import jax

        self.name = options.strategy
        o = self.options
        auto = o.job_addresses == "auto"
        addresses, count, index = _jax_cluster(o)
        if auto or count > 1:
            # CPU processes exchange through gloo (GPUs and TPUs use their own links).
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
            if auto:
                jax.distributed.initialize()  # Cloud TPU, SLURM, Open MPI
            else:
                keras.distribution.initialize(addresses, count, index)
        self.process_index = jax.process_index()
        self.process_count = jax.process_count()
        self.devices = jax.devices()
        self.local_device_count = jax.local_device_count()
        self.distribution = None
        self.log(f"Distribution: {self.name}, process {self.process_index} of "
                 f"{self.process_count}, {len(self.devices)} device(s) "
                 f"({self.local_device_count} local, {self.devices[0].platform}).")

    @property
    def num_replicas(self) -> int:
        if self.distribution is not None:
            return self.distribution.num_model_replicas
        if self.name == "model_parallel":
            return (self.options.mesh_shape or (1,))[0]
        return len(self.devices)

    def check_batch_size(self, batch_size: int) -> None:
        super().check_batch_size(batch_size)
        per_process = batch_size // self.process_count
        if per_process % self.local_device_count and self.name == "data_parallel":
            raise UsageError(
                f"--batch-size {batch_size}: each process's {per_process} examples do not split "
                f"over its {self.local_device_count} devices."
            )

    def describe(self) -> dict:
        info = super().describe()
        info["devices"] = len(self.devices)
        if self.distribution is not None:
            info["mesh"] = dict(zip(self.distribution.device_mesh.axis_names,
                                    map(int, self.distribution.device_mesh.shape)))
        return info

    def scope(self, arch: dict):
        import keras_vit

        if self.distribution is None:
            # Multi-process: each process feeds its own shard (train_input),
            # so Keras must not shard the batches again.
            auto = self.process_count == 1
            if self.name == "data_parallel":
                self.distribution = keras_vit.distribution.data_parallel(
                    self.devices, auto_shard_dataset=auto)
            else:
                if self.process_count > 1:
                    raise UsageError(
                        "--strategy model_parallel runs in one process (all its devices); "
                        "across processes use data_parallel (checkpoints of variables "
                        "sharded over several hosts are not supported yet)."
                    )
                try:
                    self.distribution = keras_vit.distribution.model_parallel(
                        arch, self.options.mesh_shape, self.devices,
                        shard_embedding=bool(self.options.shard_embedding),
                        auto_shard_dataset=auto)
                except ValueError as e:
                    raise UsageError(f"--strategy model_parallel: {e}") from e
            self.log(f"Distribution: {self.distribution}.")
        # Not set globally: Keras' saving creates scratch variables, which under
        # a multi-process distribution would be collectives that only the
        # chief (the writer) enters. fit and evaluate enter the scope again.
        return self.distribution.scope()

    def train_input(self, data):
        import tf_data

        return tf_data.make_dataset_fn(
            data.source, "train", data.train_config, training=True,
            process_index=self.process_index, process_count=self.process_count,
        )()

    def eval_input(self, data, role: str):
        """Every batch full (JAX shards it over devices), padded with zero-weight examples.

        Returns (images, labels, weights) batches, each process its slice of
        every global batch; with sum-over-batch losses the loss is then low by
        (examples + padding) / examples, which `evaluate` and `fit` correct.
        """
        import tensorflow as tf

        batch = data.eval_config.batch_size
        n = data.source.split(role).num_examples
        pad = (-n) % batch
        ds = data.dataset(role).unbatch().map(lambda x, y: (x, y, tf.ones((), tf.float32)))
        if pad:
            filler = ds.take(1).map(lambda x, y, w: (tf.zeros_like(x), y, tf.zeros_like(w)))
            ds = ds.concatenate(filler.repeat(pad))
        ds = ds.batch(batch, drop_remainder=True)
        ds = ds.apply(tf.data.experimental.assert_cardinality((n + pad) // batch))
        if self.process_count > 1:
            per, i = batch // self.process_count, self.process_index
            ds = ds.map(lambda x, y, w: (x[i * per:(i + 1) * per], y[i * per:(i + 1) * per],
                                         w[i * per:(i + 1) * per]))
        ds = ds.prefetch(tf.data.AUTOTUNE)
        ds.loss_correction = (n + pad) / n  # attribute read by fit/evaluate
        return ds

    def fit(self, model, train, *, validation_data=None, callbacks=(), **kwargs):
        callbacks = [_OutsideDistribution(c) if isinstance(c, _SAVERS) else c for c in callbacks]
        factor = getattr(validation_data, "loss_correction", 1.0)
        if validation_data is not None and factor != 1.0:
            callbacks.insert(0, _ScaleLog("val_loss", factor))
        with self.distribution.scope():
            build_before_fit(model, train)
            return model.fit(train, validation_data=validation_data, callbacks=callbacks,
                             **kwargs)

    def evaluate(self, model, data, role: str) -> dict:
        ds = self.eval_input(data, role)
        with self.distribution.scope():
            result = {k: float(v) for k, v in
                      model.evaluate(ds, verbose=0, return_dict=True).items()}
        if "loss" in result:
            result["loss"] *= ds.loss_correction
        return result

    def barrier(self, name: str = "barrier") -> None:
        if self.process_count > 1:
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)

    def shutdown(self) -> None:
        if self.process_count > 1:
            import jax

            self.barrier("shutdown")
            jax.distributed.shutdown()


_SAVERS = (cb.AtomicModelCheckpoint,)


class _OutsideDistribution(keras.callbacks.Callback):
    """Runs a callback that saves the model with no distribution in force.

    `model.save` creates scratch variables (e.g. a dummy optimizer); created
    under a multi-process distribution they would be collectives that only
    the saving process (the chief) enters.
    """

    def __init__(self, callback):
        super().__init__()
        self.callback = callback

    def set_model(self, model):
        super().set_model(model)
        self.callback.set_model(model)

    def set_params(self, params):
        super().set_params(params)
        self.callback.set_params(params)

    def on_epoch_end(self, epoch, logs=None):
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(None)
        try:
            self.callback.on_epoch_end(epoch, logs)
        finally:
            keras.distribution.set_distribution(previous)


def _jax_cluster(o: Options) -> tuple[str | None, int, int | None]:
    """(coordinator address(es), process count, process id) from the flags or environment."""
    env = os.environ
    addresses = o.job_addresses or env.get("KERAS_DISTRIBUTION_JOB_ADDRESSES")
    listed = len([a for a in (addresses or "").split(",") if a.strip()])
    count = o.num_processes
    if count is None:
        count = int(env.get("KERAS_DISTRIBUTION_NUM_PROCESSES") or (listed if listed > 1 else 1))
    index = o.process_id
    if index is None and env.get("KERAS_DISTRIBUTION_PROCESS_ID"):
        index = int(env["KERAS_DISTRIBUTION_PROCESS_ID"])
    if count > 1 and o.job_addresses != "auto":
        if not addresses:
            raise UsageError(f"{count} JAX processes need the coordinator: --job-addresses "
                             "HOST:PORT of process 0 (or 'auto' on a TPU pod / SLURM).")
        if index is None or not 0 <= index < count:
            raise UsageError(f"Each of the {count} JAX processes needs its --process-id "
                             f"in 0..{count - 1}.")
    return addresses, count, index


class _ScaleLog(keras.callbacks.Callback):
    """Multiplies one epoch log value, in place, before the later callbacks see it."""

    def __init__(self, key: str, factor: float):
        super().__init__()
        self.key, self.factor = key, factor

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.key in logs:
            logs[self.key] = float(logs[self.key]) * self.factor


# -- PyTorch -------------------------------------------------------------------------------

class TorchDDP(Distributed):
    """`DistributedDataParallel` around the Keras model, driven by `model.fit`.

    As in the Keras guide for the torch backend, the model is wrapped in DDP
    and each process trains on its shard; here `model.fit` keeps running the
    program's optimizer, schedule, metrics and callbacks: the model's
    `train_step` calls the DDP wrapper for the forward pass, so that
    `backward()` averages the gradients over the processes (bucketed
    all-reduce) before the Keras optimizer applies them.
    """

    name = "ddp"

    def __init__(self, options: Options, log=print):
        super().__init__(options, log)
        import torch
        import torch.distributed as torch_dist

        o = self.options
        env = os.environ
        world = o.num_processes if o.num_processes is not None else int(env.get("WORLD_SIZE", 1))
        if world > 1 and o.process_id is None and "RANK" not in env:
            raise UsageError(f"Each of the {world} ddp processes needs its --process-id in "
                             f"0..{world - 1} (torchrun sets RANK).")
        rank = o.process_id if o.process_id is not None else int(env.get("RANK", 0))
        if o.job_addresses and o.job_addresses != "auto":
            init_method = "tcp://" + o.job_addresses.split(",")[0].strip()
        elif "MASTER_ADDR" in env:
            init_method = "env://"
        elif world > 1:
            raise UsageError("--strategy ddp with several processes needs --job-addresses "
                             "HOST:PORT (process 0's) or torchrun's MASTER_ADDR/MASTER_PORT.")
        else:
            init_method = f"tcp://127.0.0.1:{_free_port()}"
        if not 0 <= rank < world:
            raise UsageError(f"--process-id {rank} is not in 0..{world - 1}.")
        cuda = torch.cuda.is_available()
        if cuda:
            local_rank = int(env.get("LOCAL_RANK", rank % torch.cuda.device_count()))
            torch.cuda.set_device(local_rank)
        backend = "nccl" if cuda else "gloo"
        torch_dist.init_process_group(backend, init_method=init_method, world_size=world, rank=rank)
        self.torch_dist = torch_dist
        self.process_index, self.process_count = rank, world
        self.backend = backend
        self.log(f"Distribution: ddp ({backend}), process {rank} of {world}.")

    @property
    def num_replicas(self) -> int:
        return self.process_count

    def describe(self) -> dict:
        return {**super().describe(), "backend": self.backend}

    def train_input(self, data):
        import tf_data

        return tf_data.make_dataset_fn(
            data.source, "train", data.train_config, training=True,
            process_index=self.process_index, process_count=self.process_count,
        )()

    def fit(self, model, train, *, callbacks=(), validation_data=None, **kwargs):
        wrap_in_ddp(model)
        # Logged train metrics are each process's own; average them so that
        # every process sees (and stops on) the same numbers.
        callbacks = [_AverageLogs(self.torch_dist)] + list(callbacks)
        build_before_fit(model, train)
        return model.fit(train, callbacks=callbacks, validation_data=validation_data, **kwargs)

    def evaluate(self, model, data, role: str) -> dict:
        # No collective: the chief evaluates the whole split by itself.
        return super().evaluate(model, data, role) if self.is_chief else {}

    def barrier(self, name: str = "barrier") -> None:
        if self.process_count > 1:
            self.torch_dist.barrier()

    def shutdown(self) -> None:
        if self.torch_dist.is_initialized():
            self.torch_dist.destroy_process_group()


def wrap_in_ddp(model: keras.Model, **ddp_kwargs):
    """Routes `model.fit`'s forward pass through `DistributedDataParallel(model)`.

    Replaces the instance's `train_step` by the torch backend's, with the DDP
    wrapper as the forward call; DDP broadcasts process 0's weights when it is
    created and all-reduces (averages) the gradients during `backward()`.
    Returns the DDP module.
    """
    import torch
    from keras.src import tree
    from keras.src.trainers.data_adapters import data_adapter_utils

    if model.__dict__.get("_ddp_module") is not None:
        return model.__dict__["_ddp_module"]
    device_ids = [torch.cuda.current_device()] if torch.cuda.is_available() else None
    ddp = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids, **ddp_kwargs)

    def train_step(self, data):
        x, y, sample_weight = data_adapter_utils.unpack_x_y_sample_weight(data)
        y_pred = ddp(x, training=True)
        self.zero_grad()
        loss = self._compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight,
                                  training=True)
        self._loss_tracker.update_state(
            loss, sample_weight=next(i for i in tree.flatten(x) if i is not None).shape[0])
        if self.optimizer is not None:
            loss = self.optimizer.scale_loss(loss)
        loss.backward()  # DDP averages the gradients over the processes here
        trainable_weights = self.trainable_weights[:]
        gradients = [v.value.grad for v in trainable_weights]
        with torch.no_grad():
            self.optimizer.apply(gradients, trainable_weights)
        return self.compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    model.train_step = types.MethodType(train_step, model)
    model.train_function = None  # rebuilt around the new step
    # Not an attribute torch would register: DDP holds the model, not the reverse.
    model.__dict__["_ddp_module"] = ddp
    return ddp


class _AverageLogs(keras.callbacks.Callback):
    """Averages the training logs over the torch processes, in place (first callback)."""

    def __init__(self, torch_dist):
        super().__init__()
        self.torch_dist = torch_dist

    def _average(self, logs):
        if not logs:
            return
        import torch

        keys = sorted(k for k in logs if not k.startswith("val_"))
        values = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64)
        self.torch_dist.all_reduce(values)
        values /= self.torch_dist.get_world_size()
        for k, v in zip(keys, values.tolist()):
            logs[k] = v

    def on_train_batch_end(self, batch, logs=None):
        self._average(logs)

    def on_epoch_end(self, epoch, logs=None):
        self._average(logs)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

