"""The run report: one self-contained HTML page of what a run did, what it cost and which
model won (`jobctl report`, written at the end of `jobctl run` and by a SLURM job queued
behind the jobs of `jobctl submit`).

It only reads: run.json, every task's status file and its archived attempts
(jobs/taskstatus.py), the logs of failed tasks, and the outputs lyricgen writes (metrics.json
and metrics.csv of train-rnn, metrics.json of finetune-llama, grid.json of generate-grid and
report jobs). `jobs` never imports lyricgen: these files are the contract, read leniently (a
missing or torn file leaves its cells empty; the page is still written).

Modules: `tasks` (jobs, tasks, resources, attempts, DAG layers, log tails), `training` (the
comparison of every training task), `grids` (generation grids), `charts` (DAG and timeline
geometry, the learning curves' SVG), `page` (the HTML: `write_run_report`). The SLURM job that
writes the report after a submission is jobs.executors.slurm's `submit_report`.
"""

from jobs.runreport.page import REPORT_NAME, write_run_report

__all__ = ["REPORT_NAME", "write_run_report"]
