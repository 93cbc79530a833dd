"""Print where the newest run under runs/ left its reports (used by `make demo`).

The last line is the run report's path alone (`make demo | tail -n 1`), after the grid's own
report and the run directory. Exit 1 with a one-line message when the newest run has no run
report (see `jobctl status`; `jobctl report` writes it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def newest_run(runs_dir: Path) -> Path:
    runs = sorted(p for p in runs_dir.iterdir() if (p / "run.json").is_file())
    if not runs:
        raise LookupError(f"no run under {runs_dir}/")
    return runs[-1]


def grid_report(run_dir: Path) -> Path | None:
    """The report.html of the run's last report or generate-grid job, if it wrote one."""
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    for name in reversed(record["order"]):
        job = record["jobs"][name]
        report = Path(job["out_dir"]) / "report.html"
        if job["kind"] in ("report", "generate-grid") and report.is_file():
            return report
    return None


def main() -> int:
    try:
        run_dir = newest_run(Path(sys.argv[1] if len(sys.argv) > 1 else "runs")).resolve()
        grid = grid_report(run_dir)
    except (LookupError, OSError, ValueError, KeyError) as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 1
    run_report = run_dir / "report.html"
    if not run_report.is_file():
        print(f"demo: run {run_dir.name} has no report.html (see `jobctl status`)",
              file=sys.stderr)
        return 1
    if grid is not None:
        print(f"Grid report: {grid.resolve()}")
    print(f"Run directory: {run_dir}")
    print("Run report:")
    print(run_report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
