"""Print the HTML report of the newest run under runs/ (used by `make demo`).

Exit 1 with a one-line message when the newest run has no completed report.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def newest_report(runs_dir: Path) -> Path:
    runs = sorted(p for p in runs_dir.iterdir() if (p / "run.json").is_file())
    if not runs:
        raise LookupError(f"no run under {runs_dir}/")
    record = json.loads((runs[-1] / "run.json").read_text(encoding="utf-8"))
    for name in reversed(record["order"]):
        job = record["jobs"][name]
        report = Path(job["out_dir"]) / "report.html"
        if job["kind"] in ("report", "generate-grid") and report.is_file():
            return report
    raise LookupError(f"run {runs[-1].name} has no report.html (see `jobctl status`)")


def main() -> int:
    try:
        report = newest_report(Path(sys.argv[1] if len(sys.argv) > 1 else "runs"))
    except (LookupError, OSError, ValueError, KeyError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    print(f"Report: {report.resolve()}")
    print(f"Run directory: {report.resolve().parents[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
