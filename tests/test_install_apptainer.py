"""scripts/install-apptainer.sh (`make apptainer`): refuses clearly where it does not apply,
and a second run changes nothing. The install itself runs in .ci/run (a fresh Debian 12)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "install-apptainer.sh"
ADVICE = ("install Apptainer >= 1.2 from your distribution or your cluster's module instead "
          "(https://apptainer.org/docs/admin/main/installation.html)")


def install(os_release: Path | None = None, *prefix: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"OS_RELEASE": str(os_release)} if os_release else {})}
    return subprocess.run([*prefix, "bash", str(SCRIPT)], env=env, capture_output=True,
                          text=True, timeout=120, check=False)


@pytest.mark.parametrize(("release", "name"), [
    ('ID=ubuntu\nVERSION_ID="24.04"\nPRETTY_NAME="Ubuntu 24.04.1 LTS"\n', "Ubuntu 24.04.1 LTS"),
    ('ID=debian\nVERSION_ID="13"\nPRETTY_NAME="Debian GNU/Linux 13 (trixie)"\n',
     "Debian GNU/Linux 13 (trixie)"),
    (None, "unknown")])
def test_refuses_anything_but_debian_12(release: str | None, name: str, tmp_path: Path) -> None:
    os_release = tmp_path / "os-release"
    if release is not None:
        os_release.write_text(release)
    result = install(os_release)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"install-apptainer: this installer is for Debian 12 (bookworm) "
                             f"only, this system is {name}; {ADVICE}\n")


def test_refuses_to_run_as_another_user_than_root() -> None:
    release = Path("/etc/os-release").read_text() if Path("/etc/os-release").is_file() else ""
    if "ID=debian" not in release or 'VERSION_ID="12"' not in release:
        pytest.skip("the root check comes after the system check: needs a Debian 12 machine")
    as_user: tuple[str, ...] = ()
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv to become another user")
        as_user = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    result = install(None, *as_user)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("install-apptainer: must run as root (sudo make "
                                              "apptainer)")


def fingerprint(*paths: Path) -> list[str]:
    return [hashlib.sha256(path.read_bytes()).hexdigest() for path in paths]


def test_a_second_run_changes_nothing() -> None:
    conf = Path("/etc/apptainer/apptainer.conf")
    subids = [Path("/etc/subuid"), Path("/etc/subgid")]
    if os.geteuid() != 0 or shutil.which("apptainer") is None or not conf.is_file():
        pytest.skip("needs root and an installed apptainer (make apptainer)")
    if not all(any(line.startswith("root:") for line in p.read_text().splitlines())
               for p in subids):
        pytest.skip("root has no subordinate ids yet: a run would add them (make apptainer)")
    before = fingerprint(conf, *subids)
    result = install()
    assert result.returncode == 0, result.stderr
    assert result.stdout.endswith(" is already installed; nothing to do\n"), result.stdout
    assert fingerprint(conf, *subids) == before
