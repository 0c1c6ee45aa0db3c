"""Two `keras-vit train` processes on 127.0.0.1 form one job, on each engine:

    tensorflow  --strategy multi_worker   MultiWorkerMirroredStrategy (TF_CONFIG from the flags)
    jax         --strategy data_parallel  jax.distributed over gloo CPU collectives
    torch       --strategy ddp            DistributedDataParallel over gloo

A worker is killed (SIGKILL) mid-run and the job restarted with --resume; it
must go on from the chief's last committed epoch, finish with every epoch
once, and both processes must end with identical weights, equal to one
process training on the same global batches (`distributed_worker.py
--reference 2 --resumed-at K`).

Each test runs on its engine's backend only; ports are chosen free, every
wait is bounded.
"""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from distributed_worker import free_port, job_flags, kill_all, load, start, tail, wait_all  # noqa: E402

BACKEND = keras.backend.backend()
STRATEGY = {"tensorflow": "multi_worker", "jax": "data_parallel", "torch": "ddp"}[BACKEND]
TINY = ["--dataset", "digits", "--hidden-size", "16", "--num-layers", "1", "--num-heads", "2",
        "--mlp-dim", "32", "--dropout-rate", "0", "--crop-min-area", "1", "--optimizer", "sgd",
        "--lr", "1", "--clipnorm", "0.2", "--weight-decay", "0.01", "--layer-decay", "0.5",
        "--verbose", "0"]
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL and fork-safe ports")


def launch(out, cli_args, tag, ports=None):
    ports = ports or [free_port(), free_port()]
    return [start(BACKEND, out / f"{tag}{i}.npz",
                  ["train", "--output", out / "run", *cli_args, *job_flags(STRATEGY, i, ports)],
                  out / f"{tag}{i}.log")
            for i in range(2)]


def logs(out, tag):
    return "\n".join(f"--- {tag}{i}.log ---\n{tail(out / f'{tag}{i}.log')}" for i in range(2))


def flat(arrays):
    return np.concatenate([a.ravel() for a in arrays])


def _committed(state):
    try:
        return json.loads(state.read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def test_job_killed_and_resumed_ends_identical_and_equal_one_process(tmp_path, request):
    """SIGKILL a worker after 2 committed epochs, restart the job with --resume, and compare.

    The resumed job must run exactly the uncommitted epochs, both processes
    must end bit-identical, and equal one process trained on the same global
    batches (`--reference 2 --resumed-at K`).
    """
    epochs = 5
    args = [*TINY, "--batch-size", "256", "--epochs", str(epochs)]  # 4 steps per epoch
    out = tmp_path / "run"
    state = out / "backup" / "state.json"
    procs = launch(tmp_path, args, "a")
    try:
        deadline = time.time() + 240
        while _committed(state) < 2:
            assert time.time() < deadline, "no 2 epochs committed in 240 s\n" + logs(tmp_path, "a")
            assert all(p.poll() is None for p in procs), "a worker ended early\n" + logs(tmp_path, "a")
            time.sleep(0.02)
        procs[1].send_signal(signal.SIGKILL)  # the non-chief worker dies
        procs[1].wait(timeout=30)
        # The chief cannot go on without it; the job's supervisor stops it too.
        try:
            procs[0].wait(timeout=1)
        except subprocess.TimeoutExpired:
            procs[0].send_signal(signal.SIGKILL)
            procs[0].wait(timeout=30)
    finally:
        kill_all(procs)
    assert procs[1].returncode == -signal.SIGKILL
    committed = _committed(state)
    assert 2 <= committed < epochs, "the kill must land mid-run"
    assert not (out / "metrics.json").exists()

    resumed = launch(tmp_path, [*args, "--resume"], "b")  # new ports, same run directory
    # One process on the same global batches, interrupted at the same epoch (compared below),
    # runs alongside: it needs only `committed`.
    reference = start(BACKEND, tmp_path / "ref.npz",
                      ["train", "--output", tmp_path / "ref", *args], tmp_path / "ref.log",
                      worker_args=["--reference", "2", "--resumed-at", str(committed)])
    request.addfinalizer(lambda: kill_all([reference]))  # should an assertion stop the test
    codes = wait_all(resumed, timeout=300)
    assert codes == [0, 0], logs(tmp_path, "b")
    for i in range(2):
        assert f"{committed} epoch(s) already completed" in tail(tmp_path / f"b{i}.log", 10**6)

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["resumed_from_epoch"] == committed
    assert metrics["distribution"]["strategy"] == STRATEGY
    assert metrics["distribution"]["processes"] == 2
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, epochs + 1))
    rows = (out / "log.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, epochs + 1))
    # Epochs the restarted job ran, from the chief's event log: exactly the uncommitted ones.
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    pids = [e["pid"] for e in events if e["event"] == "train_begin"]
    assert len(pids) == 2, "only the chief writes events"
    rerun = [e["epoch"] for e in events if e["event"] == "end" and e["pid"] == pids[1]]
    assert rerun == list(range(committed + 1, epochs + 1))
    # Only the chief wrote: no other process's temporary files.
    assert not [p for p in out.rglob("*") if p.name.startswith(("tmp-", ".tmp-"))]

    # Both processes restored the same state and trained in step ...
    w0, w1 = load(tmp_path / "b0.npz"), load(tmp_path / "b1.npz")
    assert all(np.array_equal(a, b) for a, b in zip(w0, w1)), "the processes' weights differ"
    # ... as one process does on the same global batches, interrupted at the same epoch.
    assert wait_all([reference], timeout=200) == [0], tail(tmp_path / "ref.log")
    ref, init = load(tmp_path / "ref.npz"), load(tmp_path / "ref.init.npz")
    assert float(np.max(np.abs(flat(ref) - flat(init)))) > 0.05  # training moved the weights
    np.testing.assert_allclose(flat(w0), flat(ref), rtol=1e-5, atol=1e-6)
    ref_loss = json.loads((tmp_path / "ref" / "reference.json").read_text())["loss"]
    assert ref_loss[-1] < ref_loss[0] - 0.1  # and it learns
    np.testing.assert_allclose([h["loss"] for h in metrics["history"]], ref_loss, rtol=1e-5)
