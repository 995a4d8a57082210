"""Benchmark bookkeeping: committed results hold no folders of the machine that measured them, and the load recorded
beside a run is what the CPU was doing then."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.common import busy_processes, without_local_paths

REPO = Path(__file__).resolve().parent.parent


def test_absolute_paths_become_names() -> None:
    assert without_local_paths("142% /x/y/.venv/bin/python3 -m k -f /tmp/a.json --ip=127.0.0.1") == \
        "142% python3 -m k -f a.json --ip=127.0.0.1"
    assert without_local_paths("ratio 1/2 and 3.5/4") == "ratio 1/2 and 3.5/4"  # not paths


def test_committed_results_hold_no_local_paths() -> None:
    local = re.compile(r"(^|[^A-Za-z0-9_.~-])/(work|tmp|root|home)/")
    files = [*sorted((REPO / "benchmarks" / "results").glob("*.json")), REPO / "BENCHMARKS.md"]
    offending = [f.name for f in files if local.search(f.read_text())]
    assert not offending, f"absolute paths of a local machine in {offending}"


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads /proc (Linux)")
def test_busy_processes_measure_cpu_now_and_show_paused_jobs_as_stopped() -> None:
    """The load recorded beside a benchmark is CPU use over a short window, not ps's lifetime average: a job
    paused with SIGSTOP (how a long training run is held during a benchmark) is listed as stopped, using none."""
    marker = "busy_loop_for_the_load_test"
    job = subprocess.Popen([sys.executable, "-c", f"# {marker}\nwhile True: pass"])
    try:
        deadline = 50
        while deadline and not any(marker in b for b in busy_processes(0.3)):  # running: > 5% over the window
            deadline -= 1
        assert deadline, "a busy loop was never seen as busy"
        os.kill(job.pid, signal.SIGSTOP)
        rows = [b for b in busy_processes(0.3) if marker in b]
        assert len(rows) == 1 and rows[0].startswith("stopped (SIGSTOP, no CPU)")
    finally:
        job.kill()
        job.wait()
