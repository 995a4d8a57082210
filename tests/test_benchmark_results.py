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


def test_a_failed_or_mistyped_run_keeps_the_earlier_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full run replaces the whole set of results only once every section ran; a bad option is refused before
    anything is touched, and files in --out that are not the tool's own are never deleted."""
    from benchmarks import run_all

    out = tmp_path / "results"
    out.mkdir()
    for name in ("machine", "cifar", "run"):
        (out / f"{name}.json").write_text(f'{{"old": "{name}"}}')
    (out / "notes.json").write_text("{}")  # someone else's file

    def ok(args):
        return {"fresh": True}

    def broken(args):
        raise RuntimeError("boom")

    monkeypatch.setattr(run_all, "machine_summary", lambda: "test machine")
    monkeypatch.setattr(run_all, "RUNNERS", {"machine": ok, "cifar": broken})
    monkeypatch.setattr(run_all, "SECTIONS", ("machine", "cifar"))
    with pytest.raises(SystemExit):
        run_all.main(["--out", str(out), "--threads", "0", "--no-report"])
    assert run_all.main(["--out", str(out), "--no-report"]) == 1  # cifar failed: nothing replaced
    assert {f.name: f.read_text() for f in out.glob("*.json")} == {
        "machine.json": '{"old": "machine"}', "cifar.json": '{"old": "cifar"}', "run.json": '{"old": "run"}',
        "notes.json": "{}"}
    monkeypatch.setattr(run_all, "RUNNERS", {"machine": ok, "cifar": ok})
    assert run_all.main(["--out", str(out), "--no-report"]) == 0
    assert sorted(f.name for f in out.glob("*.json")) == ["cifar.json", "machine.json", "notes.json", "run.json"]
    assert '"fresh": true' in (out / "cifar.json").read_text()
    (kept,) = out.glob(".incoming-*")  # the failed run's results, left for a look; the finished run's moved in
    assert sorted(f.name for f in kept.glob("*.json")) == ["machine.json", "run.json"]
