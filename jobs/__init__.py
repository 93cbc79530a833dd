"""jobctl: declarative YAML manifests -> SLURM or local batch jobs.

This package never imports torch or lyricgen: the only contract with the ML library is the
kind registry (`kindspec.registry`) and the command line `python -m lyricgen KIND --config FILE`.
"""
