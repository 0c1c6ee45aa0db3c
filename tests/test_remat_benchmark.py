"""benchmarks/remat.py runs (tiny model, one process per configuration)."""

import os
import subprocess
import sys

from conftest import once

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@once
def test_remat_benchmark_dry_run():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "remat.py"),
                           "--dry-run", "--backends", "torch"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    table = [l for l in done.stdout.splitlines() if l.startswith("| torch")]
    assert len(table) == 2 and sum("| yes |" in l for l in table) == 1
