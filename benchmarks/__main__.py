"""``python -m benchmarks``: run every benchmark and write the report (see ``benchmarks/run_all.py``)."""

from benchmarks.run_all import main

raise SystemExit(main())
