"""jobs.image and containers/: the def file, pinned requirements, apptainer command lines,
`jobctl image build|info` against a stand-in apptainer, and (where Apptainer is installed)
a real build."""

from __future__ import annotations

import datetime as dt
import errno
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from packaging.requirements import Requirement

from jobs import image
from jobs.doctor import MINOR_COMPAT_DRIVER, TOOLKIT_DRIVER
from jobs.runtime import CACHE_ENV_DIRS

REPO = Path(__file__).resolve().parents[1]
DEF = REPO / "containers" / "lyricgen.def"
REQUIREMENTS = REPO / "containers" / "requirements-gpu.txt"
SECTIONS = ("arguments", "files", "post", "environment", "labels", "test", "runscript", "help")


def sections(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(header keywords, section name -> body) of an Apptainer definition file."""
    header: dict[str, str] = {}
    bodies: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        match = re.match(r"^%(\w+)\s*$", line)
        if match:
            current = bodies.setdefault(match.group(1), [])
        elif current is not None:
            current.append(line)
        elif ":" in line and not line.lstrip().startswith("#"):
            key, _, value = line.partition(":")
            header[key.strip()] = value.strip()
    return header, {name: "\n".join(lines) for name, lines in bodies.items()}


HEADER, BODY = sections(DEF.read_text(encoding="utf-8"))


def requirement_lines() -> list[str]:
    return [line.strip() for line in REQUIREMENTS.read_text(encoding="utf-8").splitlines()
            if line.strip() and not line.startswith("#")]


def pinned() -> dict[str, str]:
    reqs = [Requirement(line) for line in requirement_lines() if not line.startswith("--")]
    return {req.name.lower(): str(req.specifier)[2:] for req in reqs}


def image_cuda() -> str:
    match = re.search(r"^\s*export LYRICGEN_IMAGE_CUDA=(\S+)$", BODY["environment"], re.M)
    assert match, "%environment must export LYRICGEN_IMAGE_CUDA"
    return match.group(1)


# --- the definition file -------------------------------------------------------------

def test_def_has_every_section_and_a_pinned_cuda12_base() -> None:
    assert HEADER["Bootstrap"] == "docker"
    assert set(SECTIONS) <= set(BODY), f"missing sections: {set(SECTIONS) - set(BODY)}"
    name, _, tag = HEADER["From"].partition(":")
    assert name in ("nvidia/cuda", "pytorch/pytorch") and tag and "latest" not in tag
    assert re.match(r"^12\.\d+\.\d+-", tag), f"From tag {tag!r} is not an exact CUDA 12.x.y"


def test_cuda_version_agrees_between_base_requirements_env_and_driver_table() -> None:
    tag = HEADER["From"].partition(":")[2]
    cuda = image_cuda()
    assert tag.startswith(cuda + "."), (tag, cuda)
    wheel = "cu" + cuda.replace(".", "")
    assert pinned()["torch"].endswith("+" + wheel)
    assert f"--extra-index-url https://download.pytorch.org/whl/{wheel}" in requirement_lines()
    assert cuda in TOOLKIT_DRIVER and cuda.split(".")[0] in MINOR_COMPAT_DRIVER
    assert cuda in BODY["help"]


def test_requirements_are_all_pinned_and_agree_with_pyproject() -> None:
    lines = [line for line in requirement_lines() if not line.startswith("--")]
    assert all(re.match(r"^[A-Za-z0-9_.-]+==[A-Za-z0-9_.+-]+$", line) for line in lines), lines
    versions = pinned()
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["gpu"]]
    for spec in map(Requirement, wanted):
        name = spec.name.lower()
        assert name in versions, f"{name} (pyproject) is missing from requirements-gpu.txt"
        assert spec.specifier.contains(versions[name], prereleases=True), (spec, versions[name])


def test_files_section_copies_the_project_into_opt_lyricgen() -> None:
    entries = [line.split() for line in BODY["files"].splitlines() if line.strip()]
    assert {src for src, _ in entries} == {"pyproject.toml", "README.md", "jobs", "lyricgen",
                                           "templates", "containers/requirements-gpu.txt"}
    for src, dst in entries:
        assert dst == f"/opt/lyricgen/{src}"
        assert (REPO / src).exists(), f"%files source {src} is missing from the checkout"


def test_build_args_match_the_arguments_section_and_the_placeholders() -> None:
    declared = {line.split("=")[0].strip() for line in BODY["arguments"].splitlines()
                if line.strip()}
    used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", DEF.read_text(encoding="utf-8")))
    # apptainer refuses build args the def does not use, and placeholders without a value.
    assert declared == used == set(image.build_args(REPO))
    for key in ("version", "commit", "built"):
        assert re.search(rf"^\s*{re.escape(image.LABELS[key])} \{{\{{", BODY["labels"], re.M)
    for key in ("cuda", "torch", "python"):
        assert f"{image.LABELS[key]} $(" in BODY["post"]


def test_post_installs_pinned_requirements_then_the_project_without_deps() -> None:
    post = BODY["post"]
    assert "pip install --no-cache-dir -r /opt/lyricgen/containers/requirements-gpu.txt" in post
    assert "--no-deps" in post and "/opt/lyricgen\n" in post
    assert post.index("requirements-gpu.txt") < post.index("--no-deps")
    assert not re.search(r"TOKEN|SECRET|PASSWORD", post, re.I)


@pytest.mark.parametrize("section", ["post", "environment", "test", "runscript"])
def test_shell_sections_parse(section: str) -> None:
    result = subprocess.run(["sh", "-n"], input=BODY[section], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr


def test_environment_defaults_cover_the_runtime_caches_and_yield_to_given_values() -> None:
    env = BODY["environment"]
    for name in CACHE_ENV_DIRS:
        assert re.search(rf'^\s*export {name}="\${{{name}:-/cache/', env, re.M), name
    script = env + '\nprintf "%s|%s|%s\\n" "$HF_HOME" "$MPLCONFIGDIR" "$HF_HUB_OFFLINE"'
    clean = {"PATH": os.environ["PATH"]}
    default = subprocess.run(["sh", "-c", script], env=clean, capture_output=True, text=True,
                             check=True).stdout.strip()
    assert default == "/cache/huggingface|/cache/matplotlib|1"
    given = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True,
                           env={**clean, "HF_HOME": "/scratch/hf", "HF_HUB_OFFLINE": "0"})
    assert given.stdout.strip() == "/scratch/hf|/cache/matplotlib|0"


def test_runscript_and_help_run_lyricgen() -> None:
    assert BODY["runscript"].strip() == 'exec python3 -m lyricgen "$@"'
    assert "apptainer exec --nv" in BODY["help"] and "python3 -m lyricgen" in BODY["help"]


def self_test_code() -> str:
    match = re.search(r"python3 - <<'PY'\n(.*?)\nPY$", BODY["test"], re.S | re.M)
    assert match, "%test must run its Python through a quoted heredoc"
    return match.group(1)


def test_self_test_rejects_a_torch_without_the_promised_cuda() -> None:
    """The image's %test imports the whole stack and refuses a torch that is not the
    promised CUDA build (a CPU torch in the image is the classic silent failure). Here torch
    is normally the CPU build; with a matching CUDA torch the test instead passes (it then
    runs the 4-bit matmul when a GPU is visible)."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "LYRICGEN_IMAGE_CUDA": image_cuda(), "PYTHONPATH": path}
    result = subprocess.run([sys.executable, "-c", self_test_code()], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=300, check=False)
    first = result.stdout.splitlines()[0] if result.stdout else ""
    match = re.search(r"\| torch \S+ \(CUDA (\S+)\) \|.* \| bitsandbytes 0\.50\.2$", first)
    assert match, result.stdout + result.stderr
    if match.group(1) == image_cuda():
        assert result.returncode == 0, result.stdout + result.stderr
    else:
        assert result.returncode == 1
        assert result.stderr.splitlines()[-1] == (  # bitsandbytes may log lines before it
            f"FAIL: torch is built for CUDA {match.group(1)}, the image promises "
            f"'{image_cuda()}'")


# --- command lines and parsing (pure) ------------------------------------------------------

def test_build_argv() -> None:
    args = {"VERSION": "0.1.0", "GIT_COMMIT": "abc", "BUILD_DATE": "2026-01-02T03:04:05Z"}
    assert image.build_argv(Path("/r/containers/lyricgen.def"), Path("/o/.x.sif.building-1"),
                            args) == [
        "apptainer", "build", "--build-arg", "VERSION=0.1.0", "--build-arg", "GIT_COMMIT=abc",
        "--build-arg", "BUILD_DATE=2026-01-02T03:04:05Z", "/o/.x.sif.building-1",
        "/r/containers/lyricgen.def"]
    assert image.build_argv(Path("d.def"), Path("t"), {}, sandbox=True, fakeroot=True) == [
        "apptainer", "build", "--fakeroot", "--sandbox", "t", "d.def"]


def test_inspect_test_and_exec_argv() -> None:
    sif = Path("/img/lyricgen.sif")
    assert image.inspect_argv(sif) == ["apptainer", "inspect", "--labels", "--json",
                                       "/img/lyricgen.sif"]
    assert image.test_argv(sif, nv=True) == ["apptainer", "test", "--nv", "/img/lyricgen.sif"]
    assert image.test_argv(sif, nv=False) == ["apptainer", "test", "/img/lyricgen.sif"]
    assert image.exec_argv(sif, ["nvidia-smi", "-L"], nv=True, binds=["/a:/a", "/b"]) == [
        "apptainer", "exec", "--nv", "--cleanenv", "--bind", "/a:/a", "--bind", "/b",
        "/img/lyricgen.sif", "nvidia-smi", "-L"]


@pytest.mark.parametrize(("text", "version"), [
    ("1.3.4\n", (1, 3, 4)), ("apptainer version 1.2.5-1.el8\n", (1, 2, 5)),
    ("1.4\n", (1, 4)), ("garbage\n", None)])
def test_parse_version(text: str, version: tuple[int, ...] | None) -> None:
    assert image.parse_version(text) == version


def test_parse_labels_and_info_lines() -> None:
    labels = image.parse_labels(
        '{"data": {"attributes": {"labels": {"org.lyricgen.version": "0.1.0", '
        '"org.lyricgen.cuda": "12.8", "org.lyricgen.torch": "2.13.0+cu128"}}}, '
        '"type": "container"}')
    assert labels["org.lyricgen.cuda"] == "12.8"
    lines = image.info_lines(Path("x.sif"), labels, 3 * image.GIB)
    assert lines[0] == "image:     x.sif (3.0 GiB)"
    assert "version:   0.1.0" in lines and "commit:    unknown" in lines
    assert "cuda:      12.8 (torch 2.13.0+cu128, python unknown)" in lines
    assert image.info_lines(Path("d"), {}, None)[-1].startswith("note: no org.lyricgen.*")
    for bad in ("not json", '{"data": {}}', '{"data": {"attributes": {"labels": [1]}}}'):
        with pytest.raises(ValueError, match="unexpected `apptainer inspect` output"):
            image.parse_labels(bad)


def test_build_args_version_commit_and_date(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "9.8.7"\n')
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert image.build_args(tmp_path, when) == {
        "VERSION": "9.8.7", "GIT_COMMIT": "unknown", "BUILD_DATE": "2026-01-02T03:04:05Z"}
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "pyproject.toml"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    commit = image.git_commit(tmp_path)
    assert re.fullmatch(r"[0-9a-f]{40}", commit)
    (tmp_path / "pyproject.toml").write_text('[project]\nversion = "9.8.8"\n')
    assert image.git_commit(tmp_path) == commit + "-dirty"
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    with pytest.raises(image.InputError, match="project.version"):
        image.build_args(tmp_path)


def test_run_command_reports_missing_programs_and_timeouts(tmp_path: Path) -> None:
    missing = image.run_command([str(tmp_path / "nope"), "x"], 5)
    assert missing.returncode is None and missing.last_line().startswith("cannot run")
    slow = image.run_command(["sh", "-c", "sleep 30 & sleep 30"], 0.5)
    assert slow.returncode is None and slow.last_line() == "`sh -c` timed out after 0.5 s"
    ok = image.run_command(["sh", "-c", "echo out; echo err >&2"], 5)
    assert ok.ok and ok.stdout == "out\n" and ok.last_line() == "err"


def test_home_notes_and_space_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"HOME": str(tmp_path)}
    notes = image.home_notes(tmp_path / "images" / "x.sif", env)
    assert len(notes) == 2 and "home directory" in notes[0] and "APPTAINER_CACHEDIR" in notes[1]
    assert image.home_notes(Path("/elsewhere/x.sif"),
                            {**env, "APPTAINER_CACHEDIR": "/scratch/c"}) == []
    assert image.build_tmp_dir({"TMPDIR": "/t", "APPTAINER_TMPDIR": "/a"}) == Path("/a")
    assert image.space_problems(tmp_path / "x.sif", tmp_path, sandbox=False) == []
    monkeypatch.setattr(image, "BUILD_TMP_BYTES", 10**18)
    [problem] = image.space_problems(tmp_path / "x.sif", tmp_path, sandbox=True)
    assert problem.startswith("apptainer's build directory (APPTAINER_TMPDIR): ")


# --- the CLI against a missing and a stand-in apptainer ------------------------------------

@pytest.mark.parametrize("args", [["build"], ["info"], ["info", "some.sif"]])
def test_missing_apptainer_is_one_line_and_exit_2(args: list[str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    result = CliRunner().invoke(image.image_group, args)
    assert result.exit_code == 2
    assert result.output == ("jobctl: error: apptainer not found on PATH; install it or use "
                             "the host runtime (profile laptop)\n")


FAKE_APPTAINER = """\
#!/bin/sh
# Stand-in for apptainer: records its calls; `build` writes the target like the real one.
echo "$PWD $*" >> "$FAKE_LOG"
case "$1" in
  version) echo "${FAKE_VERSION:-1.3.4}" ;;
  build)
    for last; do :; done
    target=$(eval echo "\\${$(($# - 1))}")
    echo "image built from $last" > "$target"
    exit "${FAKE_BUILD_RC:-0}" ;;
  inspect)
    echo '{"data": {"attributes": {"labels": {"org.lyricgen.version": "0.1.0",
      "org.lyricgen.git-commit": "abc123", "org.lyricgen.build-date": "2026-01-02T03:04:05Z",
      "org.lyricgen.cuda": "12.8", "org.lyricgen.torch": "2.13.0+cu128",
      "org.lyricgen.python": "3.12.3"}}}, "type": "container"}' ;;
  *) echo "fake apptainer: unexpected $*" >&2; exit 64 ;;
esac
"""


@pytest.fixture
def fake_apptainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A stand-in `apptainer` first on PATH; its calls are logged to the returned file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "apptainer"
    script.write_text(FAKE_APPTAINER)
    script.chmod(0o755)
    log = tmp_path / "apptainer.log"
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("APPTAINER_TMPDIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    return log


def test_build_writes_atomically_with_build_args_and_refuses_to_overwrite(
        fake_apptainer: Path, tmp_path: Path) -> None:
    out = tmp_path / "images" / "lyricgen.sif"
    result = CliRunner().invoke(image.image_group, ["build", "--fakeroot"])
    assert result.exit_code == 0, result.output
    assert out.read_text() == f"image built from {DEF}\n"
    assert [p.name for p in out.parent.iterdir()] == ["lyricgen.sif"]  # no temp file left
    calls = fake_apptainer.read_text().splitlines()
    assert calls[0] == f"{tmp_path} version"
    build = calls[1].split()
    assert build[0] == str(REPO)  # apptainer runs where the %files paths are relative to
    assert build[1:4] == ["build", "--fakeroot", "--build-arg"]
    assert build[4:8] == ["VERSION=0.1.0", "--build-arg", f"GIT_COMMIT={image.git_commit(REPO)}",
                          "--build-arg"]
    assert re.fullmatch(r"BUILD_DATE=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", build[8])
    assert build[9] == str(out.parent / f".lyricgen.sif.building-{os.getpid()}")
    assert "cuda:      12.8 (torch 2.13.0+cu128, python 3.12.3)" in result.output

    again = CliRunner().invoke(image.image_group, ["build"])
    assert again.exit_code == 2
    assert again.output == f"jobctl: error: {out} already exists; pass --force to replace it\n"
    out.write_text("old image\n")
    forced = CliRunner().invoke(image.image_group, ["build", "--force", "--out", str(out)])
    assert forced.exit_code == 0 and out.read_text().startswith("image built from")


def test_failed_build_keeps_the_old_image_and_removes_the_partial_one(
        fake_apptainer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "x.sif"
    out.write_text("old image\n")
    monkeypatch.setenv("FAKE_BUILD_RC", "3")
    result = CliRunner().invoke(image.image_group, ["build", "--force", "--out", str(out)])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1] == (
        f"jobctl: apptainer build failed with exit code 3 (its output is above); {out} is "
        "unchanged")
    assert out.read_text() == "old image\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".x.sif")) == []


def test_build_refuses_old_apptainer_and_too_little_space(
        fake_apptainer: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAKE_VERSION", "1.1.9")
    old = CliRunner().invoke(image.image_group, ["build"])
    assert old.exit_code == 2 and "apptainer >= 1.2 is needed" in old.output
    monkeypatch.setenv("FAKE_VERSION", "1.3.4")
    monkeypatch.setattr(image, "IMAGE_BYTES", 10**18)
    full = CliRunner().invoke(image.image_group, ["build"])
    assert full.exit_code == 2 and len(full.output.splitlines()) == 1
    assert full.output.startswith("jobctl: error: the image: ")
    assert "build on a scratch filesystem with --out" in full.output


def test_build_sandbox_replaces_a_directory(fake_apptainer: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    built = tmp_path / "sandbox.d"
    (built / "old").mkdir(parents=True)
    monkeypatch.setattr(image, "_run_streaming", _fake_sandbox_build)
    image.build_image(DEF, built, sandbox=True, force=True, echo=lambda _: None)
    assert sorted(p.name for p in built.iterdir()) == ["new"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".sandbox")) == []


def _fake_sandbox_build(argv: list[str], cwd: Path, timeout: float) -> int:
    assert "--sandbox" in argv
    (Path(argv[-2]) / "new").mkdir(parents=True)
    return 0


def test_info_prints_labels_and_rejects_a_missing_image(fake_apptainer: Path,
                                                        tmp_path: Path) -> None:
    sif = tmp_path / "images" / "lyricgen.sif"
    missing = CliRunner().invoke(image.image_group, ["info"])
    assert missing.exit_code == 2
    assert missing.output == ("jobctl: error: images/lyricgen.sif: no such image (build it "
                              "with `jobctl image build`)\n")
    sif.parent.mkdir()
    sif.write_bytes(b"\0" * 1024)
    result = CliRunner().invoke(image.image_group, ["info", "--profile", "cluster"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "image:     images/lyricgen.sif (0.0 GiB)", "version:   0.1.0", "commit:    abc123",
        "built:     2026-01-02T03:04:05Z", "cuda:      12.8 (torch 2.13.0+cu128, python 3.12.3)",
        "base:      unknown", "apptainer: unknown"]
    assert fake_apptainer.read_text().splitlines()[-1].endswith(
        "inspect --labels --json images/lyricgen.sif")


# --- the real thing --------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(image.BUILD_TIMEOUT_S)
@pytest.mark.skipif(shutil.which("apptainer") is None,
                    reason="apptainer is not installed (not in Debian 12 nor on PyPI)")
def test_real_build_and_run(tmp_path: Path) -> None:
    """Builds the image (network, ~20 GiB of temporary space, tens of minutes), then runs
    lyricgen in it and reads its labels; the %test runs during the build."""
    out = tmp_path / "lyricgen.sif"
    args = ["build", "--out", str(out), *([] if os.geteuid() == 0 else ["--fakeroot"])]
    built = CliRunner().invoke(image.image_group, args)
    assert built.exit_code == 0, built.output
    info = CliRunner().invoke(image.image_group, ["info", str(out)])
    assert info.exit_code == 0 and "cuda:      12.8" in info.output
    run = subprocess.run(image.exec_argv(out, ["python3", "-m", "lyricgen", "--help"]),
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0 and "lyricgen" in run.stdout, run.stderr


def test_file_system_errors_are_one_line(fake_apptainer: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(image.image_group, ["build", "--out", str(blocker / "x.sif")])
    assert result.exit_code == 2
    assert result.output == f"jobctl: error: cannot create {blocker}: File exists\n"

    def full_disk(temp: Path, out: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out))

    monkeypatch.setattr(image, "_install", full_disk)
    failed = CliRunner().invoke(image.image_group, ["build", "--out", "x.sif"])
    assert failed.exit_code == 1
    assert failed.output.splitlines()[-1] == (
        f"jobctl: error: [Errno 28] No space left on device: '{tmp_path / 'x.sif'}'")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".x.sif")] == []
