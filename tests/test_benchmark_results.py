"""The committed benchmark results travel to other machines: no folders of the machine that measured them."""

from __future__ import annotations

import re
from pathlib import Path

from benchmarks.common import without_local_paths

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
