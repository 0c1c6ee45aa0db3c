"""A training process killed with SIGKILL mid-run, then restarted with --resume.

The resumed run must finish with every epoch accounted for exactly once: the
epochs committed before the kill are not trained again, and training goes on
from the first uncommitted epoch to the last.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import BACKEND, once

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = 10
TINY = ["--hidden-size", "16", "--num-layers", "1", "--num-heads", "2", "--mlp-dim", "16",
        "--batch-size", "256", "--verbose", "0"]


def keras_vit(*args):
    return [sys.executable, "-m", "applications.cli", *map(str, args)]


def epochs_in_csv(path):
    lines = path.read_text().splitlines()[1:]
    return [int(line.split(",")[0]) for line in lines]


@once
@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")
def test_sigkill_then_resume_redoes_no_completed_epoch(tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, KERAS_BACKEND=BACKEND)
    state = out / "backup" / "state.json"
    proc = subprocess.Popen(
        keras_vit("train", "--dataset", "digits", "--output", out, "--epochs", EPOCHS, *TINY),
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline:
            if state.exists() and json.loads(state.read_text())["epoch"] >= 2:
                break
            assert proc.poll() is None, f"training ended before the kill:\n{proc.stderr.read()[-3000:]}"
            time.sleep(0.02)
        else:
            pytest.fail("no epoch committed within 240 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    committed = json.loads(state.read_text())["epoch"]
    assert 2 <= committed < EPOCHS, "the kill must land mid-run"
    # log.csv is rewritten right after each commit, so it may lag by one epoch
    # when the kill lands between the two (this test kills right after a commit).
    logged = epochs_in_csv(out / "log.csv") if (out / "log.csv").exists() else []
    assert logged in (list(range(1, committed)), list(range(1, committed + 1)))
    assert not (out / "metrics.json").exists()

    resumed = subprocess.run(
        keras_vit("train", "--output", out, "--resume", "--verbose", "0"),
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"{committed} epoch(s) already completed" in resumed.stdout

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["resumed_from_epoch"] == committed
    assert [h["epoch"] for h in metrics["history"]] == list(range(1, EPOCHS + 1))
    assert epochs_in_csv(out / "log.csv") == list(range(1, EPOCHS + 1))

    # Which process ran which epoch (append-only log, written by each process).
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    pids = list(dict.fromkeys(e["pid"] for e in events))
    assert len(pids) == 2
    first, second = ([e for e in events if e["pid"] == pid] for pid in pids)
    ended_first = [e["epoch"] for e in first if e["event"] == "end"]
    begun_second = [e["epoch"] for e in second if e["event"] == "begin"]
    ended_second = [e["epoch"] for e in second if e["event"] == "end"]
    assert set(ended_first) <= set(range(1, committed + 1))
    assert begun_second == list(range(committed + 1, EPOCHS + 1))  # none redone, none skipped
    assert ended_second == begun_second
    assert [e["initial_epoch"] for e in second if e["event"] == "train_begin"] == [committed]
