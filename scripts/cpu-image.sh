#!/usr/bin/env bash
# Print the path of a CPU image (containers/lyricgen-cpu.def) built from this checkout's
# container files, building it only when the cache has none: `.ci/run` builds it once per
# run, or reuses one from an earlier run on the same machine.
#
# The cache (LYRICGEN_IMAGE_CACHE, default ~/.cache/lyricgen-images, outside the checkout)
# keys each image by the SHA-256 of containers/* (but *.md) and pyproject.toml: what the
# image is built from. The project's code is not part of the key: jobs run from the checkout (--pwd), whose
# lyricgen/ and jobs/ Python imports before the copy installed in the image. Older images
# in the cache are removed after a build. Build output goes to stderr; stdout is the path.
# Needs apptainer and the project's venv (make apptainer setup). Build inputs as for
# `jobctl image build`: $PIP_CERT and $PIP_FIND_LINKS, else pip's own configuration (its
# global.cert and global.find-links), so the image's pip trusts and finds what this
# machine's pip does.
set -euo pipefail
cd "$(dirname "$0")/.."

pip_setting() {  # one global.KEY of `pip config list` (its files merged), unquoted
  .venv/bin/python -m pip config list 2>/dev/null | sed -n "s/^global\.$1='\(.*\)'\$/\1/p"
}
for name in PIP_CERT PIP_FIND_LINKS; do
  if [[ -z "${!name:-}" ]]; then
    value="$(pip_setting "$(tr '_A-Z' '-a-z' <<< "${name#PIP_}")")"
    if [[ -n "$value" ]]; then
      export "$name=$value"
    fi
  fi
done

cache="${LYRICGEN_IMAGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lyricgen-images}"
key="$(for file in containers/* pyproject.toml; do
         [[ -f "$file" && "$file" != *.md ]] || continue  # files, not documentation
         printf '%s\0' "$file"; sha256sum < "$file"
       done | sha256sum | cut -c1-16)"
image="$cache/lyricgen-cpu-$key.sif"
if [[ -s "$image" ]]; then
  echo "cpu-image: reusing $image" >&2
else
  mkdir -p "$cache"
  start=$SECONDS
  # zstd: 13 times faster to pack than gzip here, for a 2 % larger image (jobs/image.py)
  .venv/bin/jobctl image build --cpu --compression zstd --out "$image" >&2
  echo "cpu-image: built $image in $((SECONDS - start)) s ($(du -m "$image" | cut -f1) MiB)" >&2
  find "$cache" -maxdepth 1 -name 'lyricgen-cpu-*.sif' ! -name "${image##*/}" -delete
fi
echo "$image"
