#!/bin/sh
# The %post of both lyricgen images: containers/lyricgen.def (GPU) and lyricgen-cpu.def (CPU)
# copy the project to /opt/lyricgen (%files) and run, as root in the build container,
#
#     sh /opt/lyricgen/containers/post.sh REQUIREMENTS TORCH_INDEX
#
# 1. python3, python3-venv and ca-certificates from the base's distribution (Debian 12:
#    Python 3.11.2; Ubuntu 24.04: 3.12.3) and a venv in /opt/venv with a pinned pip;
# 2. REQUIREMENTS (every package pinned with ==, torch's build included), torch from a local
#    wheel when the build inputs hold the pinned one, else from TORCH_INDEX (PyTorch's index
#    for that build); everything else from PyPI;
# 3. the project itself without dependencies; `pip check`; containers/pins.py --exact (every
#    pin installed at its version, nothing unpinned);
# 4. labels org.lyricgen.cuda ("none" for a CPU torch), .torch and .python measured from
#    what was installed, and the /cache mount point.
#
# Build inputs, optional: jobctl image build binds a directory at /mnt (read-only; by hand:
# apptainer build --bind DIR:/mnt:ro) holding
#   /mnt/ca/*          CA bundles (PEM) that pip trusts during the build, next to the
#                      system's (a TLS-intercepting proxy); they do not stay in the image;
#   /mnt/wheels/*.whl  wheels pip may take instead of downloading (the local torch wheel).
set -eu
REQUIREMENTS="$1"
TORCH_INDEX="$2"
INPUTS=/mnt
VENV=/opt/venv

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends python3 python3-venv ca-certificates
rm -rf /var/lib/apt/lists/*

export PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
if ls "$INPUTS"/ca/* >/dev/null 2>&1; then
  cat /etc/ssl/certs/ca-certificates.crt "$INPUTS"/ca/* > /tmp/build-ca.pem
  export PIP_CERT=/tmp/build-ca.pem
  echo "post.sh: pip trusts the system's CAs and those in $INPUTS/ca"
fi
# torch's local version (e.g. 2.13.0+cpu) is part of its wheel's file name.
TORCH="$(sed -n 's/^torch==//p' "$REQUIREMENTS")"
set -- --extra-index-url "$TORCH_INDEX"
if ls "$INPUTS"/wheels/*.whl >/dev/null 2>&1; then
  export PIP_FIND_LINKS="$INPUTS/wheels"
  if ls "$INPUTS/wheels/torch-$TORCH-"*.whl >/dev/null 2>&1; then
    set --
    echo "post.sh: torch $TORCH from the local wheel, not from $TORCH_INDEX"
  fi
fi

python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install pip==26.3
"$VENV/bin/python" -m pip install "$@" -r "$REQUIREMENTS"
"$VENV/bin/python" -m pip install --no-deps --no-build-isolation /opt/lyricgen
"$VENV/bin/python" -m pip check
"$VENV/bin/python" /opt/lyricgen/containers/pins.py --exact "$REQUIREMENTS"
rm -f /tmp/build-ca.pem

# Mount point for the writable cache (the image itself is read-only).
mkdir -p /cache

py() { "$VENV/bin/python" -c "$1"; }
{
  echo "org.lyricgen.cuda $(py 'import torch; print(torch.version.cuda or "none")')"
  echo "org.lyricgen.torch $(py 'import torch; print(torch.__version__)')"
  echo "org.lyricgen.python $(py 'import platform; print(platform.python_version())')"
} >> "$APPTAINER_LABELS"
