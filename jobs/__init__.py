"""jobctl: declarative YAML manifests -> SLURM or local batch jobs.

This package never imports torch or lyricgen: the only contract with the ML library is the
kind registry (`kindspec.registry`) and the command line `python -m lyricgen KIND --config FILE`.
"""

from pathlib import Path

# The checkout jobctl runs from: job.sh files cd here, and its sources make the code version.
PROJECT_DIR = Path(__file__).resolve().parents[1]
