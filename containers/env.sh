# Environment of both lyricgen images: each def's %environment sources this file (copied in
# at /opt/lyricgen/containers/env.sh) before adding its own variables. POSIX sh.
export PATH="/opt/venv/bin:$PATH"
# Caches default under /cache: bind a writable directory there when running by hand.
# jobctl binds the profile's cache_dir at its own path and exports these four names
# through APPTAINERENV_*, which override the defaults below (see containers/README.md).
# Where /cache is not writable (nothing bound there: `apptainer test`, a quick exec) they
# default under ${TMPDIR:-/tmp}/lyricgen-cache instead: `import transformers` alone makes
# torch create its inductor cache directory, which fails in the read-only image.
lyricgen_cache=/cache
if [ ! -w "$lyricgen_cache" ]; then
  lyricgen_cache="${TMPDIR:-/tmp}/lyricgen-cache"
fi
export HF_HOME="${HF_HOME:-$lyricgen_cache/huggingface}"
export TORCHINDUCTOR_CACHE_DIR="${TORCHINDUCTOR_CACHE_DIR:-$lyricgen_cache/torchinductor}"
export XDG_CACHE_HOME="${XDG_CACHE_HOME:-$lyricgen_cache/xdg}"
export MPLCONFIGDIR="${MPLCONFIGDIR:-$lyricgen_cache/matplotlib}"
unset lyricgen_cache
# Compute nodes are usually offline: fail at once instead of retrying the hub for a
# minute. Download models beforehand, or pass HF_HUB_OFFLINE=0 to allow the hub.
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
export MPLBACKEND=Agg
