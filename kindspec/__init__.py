"""The contract between jobctl (`jobs`) and the ML library (`lyricgen`): ONE param schema.

Torch-free and small, imported by both packages (which never import each other):

- `kindspec.schema`: `Param` / `Kind` and the per-value check (`check_value`): types, ranges,
  choices, patterns, list rules. Output references (`{{ needs.JOB.outputs.NAME }}`) are part of
  the contract too (`OUTPUT_REF`).
- `kindspec.registry`: every job kind's params, outputs, default resources and the checks that
  span several params (`Kind.combined_checks`).
- `kindspec.inputs`: what an input path param must point at (a file, a directory, a model
  directory...), checked before anything starts.
- `kindspec.resolve`: `resolve_params(kind, params)`, the one function that turns a params
  dict into the full, checked params of a kind; jobctl validate and each lyricgen kind's
  config object both go through it, so a value validate accepts is never rejected by the job.
- `kindspec.provenance`: package versions and the git commit every output records.
"""
