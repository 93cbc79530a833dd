#!/usr/bin/env bash
# Install Apptainer on Debian 12 (bookworm), amd64, as root: `make apptainer` (or
# `sudo bash scripts/install-apptainer.sh`). Idempotent: exits at once when a working
# apptainer >= 1.2 is already on PATH (after making sure root can use --fakeroot).
#
# Apptainer is not packaged for Debian 12 (nor backports, nor trixie) and not on PyPI. Debian
# unstable (sid) packages it, built against glibc >= 2.38 (bookworm has 2.36). So:
#   1. from bookworm: its runtime dependencies and the build tools (debootstrap, patchelf);
#   2. from sid, with private package lists (the system's sources are not touched): the
#      apptainer .deb and the libc6, libseccomp2, libsqlite3-0 .debs;
#   3. a local package `apptainer <version>+sidlibc`: sid's files plus those three libraries
#      in /usr/lib/x86_64-linux-gnu/apptainer/sidlibc, with `apptainer` and `starter`
#      patched (patchelf) to load them through that glibc's own loader. Its Depends no longer
#      asks for libc6 >= 2.38, so apt stays consistent (installing sid's .deb with
#      `dpkg -i --force-depends` would leave apt refusing every later install until
#      `apt --fix-broken install` removed apptainer again);
#   4. `root:100000:65536` in /etc/subuid and /etc/subgid when root has no range:
#      `apptainer build --fakeroot` needs it;
#   5. where this machine withholds capabilities from root (a container sandbox: CapBnd in
#      /proc/self/status is not the full set), `root default capabilities = file` in
#      apptainer.conf: with the default `full`, root's `apptainer exec` asks for every
#      capability and stops ("Requesting capability set ... while permitted capability set
#      is ..."). Builds as root fail there the same way whatever the setting: build with
#      --fakeroot (jobctl image build does by default).
# ../shared/notes/apptainer-here.md records how this was worked out.
#
# Elsewhere use your distribution's package, your cluster's module (`module load apptainer`)
# or https://apptainer.org/docs/admin/main/installation.html; this script refuses to run.
#
# Environment: SID_MIRROR (default http://deb.debian.org/debian), APPTAINER_DEB_CACHE (where
# the sid lists, the downloaded and the rebuilt .debs are kept; default
# /var/cache/lyricgen-apptainer).
set -euo pipefail

readonly SID_MIRROR="${SID_MIRROR:-http://deb.debian.org/debian}"
readonly CACHE="${APPTAINER_DEB_CACHE:-/var/cache/lyricgen-apptainer}"
readonly LIBDIR=/usr/lib/x86_64-linux-gnu/apptainer/sidlibc
readonly BOOKWORM_PACKAGES=(ca-certificates containernetworking-plugins squashfs-tools uidmap
                            e2fsprogs debootstrap patchelf)
readonly SID_LIBRARIES=(libc6 libseccomp2 libsqlite3-0)
readonly SUBID_RANGE=100000:65536

die() { echo "install-apptainer: $*" >&2; exit 2; }
say() { echo "install-apptainer: $*"; }

# One field of /etc/os-release (empty when missing); OS_RELEASE overrides the file (tests).
os_field() {
  local file="${OS_RELEASE:-/etc/os-release}"
  # shellcheck disable=SC1090
  [[ -r "$file" ]] && (. "$file" && echo "${!1:-}")
}

check_system() {
  if [[ "$(os_field ID)" != debian || "$(os_field VERSION_ID)" != 12 ]]; then
    die "this installer is for Debian 12 (bookworm) only, this system is" \
        "$(os_field PRETTY_NAME || echo unknown); install Apptainer >= 1.2 from your" \
        "distribution or your cluster's module instead" \
        "(https://apptainer.org/docs/admin/main/installation.html)"
  fi
  [[ "$(id -u)" == 0 ]] || die "must run as root (sudo make apptainer)"
  [[ "$(dpkg --print-architecture)" == amd64 ]] || die "only amd64 is supported"
}

have_apptainer() {
  local out
  out="$(apptainer version 2>/dev/null)" || return 1
  [[ "$out" =~ ^([0-9]+)\.([0-9]+) ]] || return 1
  (( BASH_REMATCH[1] > 1 || (BASH_REMATCH[1] == 1 && BASH_REMATCH[2] >= 2) ))
}

ensure_subids() {
  local file
  for file in /etc/subuid /etc/subgid; do
    if ! grep -q '^root:' "$file" 2>/dev/null; then
      echo "root:${SUBID_RANGE}" >> "$file"
      say "added root:${SUBID_RANGE} to $file (for apptainer build --fakeroot)"
    fi
  done
}

install_bookworm_packages() {
  local missing=() pkg
  for pkg in "${BOOKWORM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
  done
  if (( ${#missing[@]} )); then
    say "installing from bookworm: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
}

# apt-get/apt-cache against sid only, with lists kept in $CACHE/lists.
sid_apt() {
  local tool="$1"; shift
  "$tool" -o "Dir::Etc::sourcelist=$CACHE/sid.list" -o Dir::Etc::sourceparts=/dev/null \
    -o "Dir::State::Lists=$CACHE/lists" "$@"
}

download_sid_debs() {
  mkdir -p "$CACHE/lists/partial" "$CACHE/debs"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $SID_MIRROR sid main" \
    > "$CACHE/sid.list"
  say "reading sid's package lists ($SID_MIRROR)"
  sid_apt apt-get update -qq
  # _apt cannot write into a root-only cache; download as root, quietly.
  (cd "$CACHE/debs" && sid_apt apt-get download -qq -o APT::Sandbox::User=root \
    apptainer "${SID_LIBRARIES[@]}")
}

sid_deb() {
  local version
  version="$(sid_apt apt-cache show --no-all-versions "$1" | sed -n 's/^Version: //p')"
  # pool file names drop an epoch ("1:") and encode it as %3a
  echo "$CACHE/debs/${1}_${version//:/%3a}_amd64.deb"
}

# Echo the path of the rebuilt package (built once per sid version, then reused).
repack() {
  local deb version local_version out work lib
  deb="$(sid_deb apptainer)"
  version="$(dpkg-deb -f "$deb" Version)"
  local_version="${version}+sidlibc"
  out="$CACHE/apptainer_${local_version}_amd64.deb"
  if [[ -s "$out" ]]; then
    echo "$out"
    return
  fi
  work="$(mktemp -d)"
  # shellcheck disable=SC2064  # expand $work now
  trap "rm -rf '$work'" RETURN
  dpkg-deb -R "$deb" "$work/pkg"
  for lib in "${SID_LIBRARIES[@]}"; do
    dpkg-deb -x "$(sid_deb "$lib")" "$work/libs"
  done
  mkdir -p "$work/pkg$LIBDIR"
  # the libraries themselves (files and .so links), not gconv/ and other subfolders
  find "$work/libs/usr/lib/x86_64-linux-gnu" -maxdepth 1 \( -type f -o -type l \) \
    -exec cp -a -t "$work/pkg$LIBDIR" {} +
  # --force-rpath: an RPATH (unlike a RUNPATH) also applies to the libraries' own
  # dependencies, so libsqlite3 finds sid's libm instead of bookworm's.
  patchelf --set-interpreter "$LIBDIR/ld-linux-x86-64.so.2" --force-rpath --set-rpath "$LIBDIR" \
    "$work/pkg/usr/bin/apptainer" "$work/pkg/usr/lib/x86_64-linux-gnu/apptainer/bin/starter"
  sed -i -e "s/^Version: .*/Version: ${local_version}/" \
         -e 's/libc6 ([^)]*)/libc6/' "$work/pkg/DEBIAN/control"
  (cd "$work/pkg" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' \
     | LC_ALL=C sort -z | xargs -0 md5sum) > "$work/pkg/DEBIAN/md5sums"
  dpkg-deb --root-owner-group -Zgzip -b "$work/pkg" "$out.tmp" >/dev/null
  mv "$out.tmp" "$out"
  echo "$out"
}

# Step 5 of the header: keep apptainer exec working for root in a capability-limited sandbox.
configure_root_caps() {
  local conf=/etc/apptainer/apptainer.conf bounding last full
  bounding="$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)"
  last="$(cat /proc/sys/kernel/cap_last_cap)"
  full="$(printf '%x' $(( (1 << (last + 1)) - 1 )))"
  if [[ "$((16#$bounding))" != "$((16#$full))" ]] \
     && grep -q '^root default capabilities = full' "$conf"; then
    sed -i 's/^root default capabilities = full/root default capabilities = file/' "$conf"
    say "root's capability bounding set is $bounding, not $full: set 'root default" \
        "capabilities = file' in $conf so that root can run images"
  fi
}

main() {
  check_system
  if have_apptainer; then
    ensure_subids
    configure_root_caps
    say "$(command -v apptainer) $(apptainer version) is already installed; nothing to do"
    return
  fi
  install_bookworm_packages
  download_sid_debs
  local package
  package="$(repack)"
  say "installing $package"
  DEBIAN_FRONTEND=noninteractive dpkg -i "$package" >/dev/null
  ensure_subids
  configure_root_caps
  have_apptainer || die "apptainer was installed but \`apptainer version\` fails"
  say "apptainer $(apptainer version) installed: $(command -v apptainer)"
}

main "$@"
