"""jobs.image and containers/: the two def files and what they share (post.sh, env.sh,
pins.py, the pinned requirements), apptainer command lines, `jobctl image build|info` against
a stand-in apptainer, and (where Apptainer and the CPU image are there) the real thing."""

from __future__ import annotations

import datetime as dt
import errno
import importlib.metadata as metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from jobs import image
from jobs.doctor import MINOR_COMPAT_DRIVER, TOOLKIT_DRIVER
from jobs.runtime import CACHE_ENV_DIRS
from lyricgen.precision import cpu_has_native_bf16

REPO = Path(__file__).resolve().parents[1]
CONTAINERS = REPO / "containers"
DEF = CONTAINERS / "lyricgen.def"
CPU_DEF = CONTAINERS / "lyricgen-cpu.def"
SHARED_REQUIREMENTS = CONTAINERS / "requirements.txt"
SECTIONS = ("arguments", "files", "post", "environment", "labels", "test", "runscript", "help")
_spec = importlib.util.spec_from_file_location("pins", CONTAINERS / "pins.py")
assert _spec and _spec.loader
pins = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pins)


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
CPU_HEADER, CPU_BODY = sections(CPU_DEF.read_text(encoding="utf-8"))
BOTH = pytest.mark.parametrize("body", [BODY, CPU_BODY], ids=["gpu", "cpu"])


def post_call(body: dict[str, str]) -> tuple[Path, str]:
    """(requirements file, torch index) that a def's %post hands to post.sh."""
    match = re.search(r"^\s*sh /opt/lyricgen/containers/post\.sh "
                      r"/opt/lyricgen/(containers/\S+) (https://\S+)$", body["post"], re.M)
    assert match, "%post must run containers/post.sh REQUIREMENTS TORCH_INDEX"
    return REPO / match.group(1), match.group(2)


def torch_pin(body: dict[str, str]) -> str:
    return pins.read_pins(post_call(body)[0])["torch"]


def image_cuda() -> str:
    match = re.search(r"^\s*export LYRICGEN_IMAGE_CUDA=(\S+)$", BODY["environment"], re.M)
    assert match, "%environment must export LYRICGEN_IMAGE_CUDA"
    return match.group(1)


# --- the definition files --------------------------------------------------------------

def test_gpu_def_has_every_section_and_a_pinned_cuda12_base() -> None:
    assert HEADER["Bootstrap"] == "docker"
    assert set(SECTIONS) <= set(BODY), f"missing sections: {set(SECTIONS) - set(BODY)}"
    name, _, tag = HEADER["From"].partition(":")
    assert name in ("nvidia/cuda", "pytorch/pytorch") and tag and "latest" not in tag
    assert re.match(r"^12\.\d+\.\d+-", tag), f"From tag {tag!r} is not an exact CUDA 12.x.y"


def test_cpu_def_is_debian_12_with_torch_cpu() -> None:
    assert CPU_HEADER == {"Bootstrap": "debootstrap", "OSVersion": "bookworm",
                          "MirrorURL": "http://deb.debian.org/debian"}
    assert set(SECTIONS) <= set(CPU_BODY), f"missing sections: {set(SECTIONS) - set(CPU_BODY)}"
    assert torch_pin(CPU_BODY).endswith("+cpu")
    assert post_call(CPU_BODY)[1] == "https://download.pytorch.org/whl/cpu"
    assert "LYRICGEN_IMAGE_CUDA" not in CPU_BODY["environment"]


def test_cuda_version_agrees_between_base_requirements_env_and_driver_table() -> None:
    tag = HEADER["From"].partition(":")[2]
    cuda = image_cuda()
    assert tag.startswith(cuda + "."), (tag, cuda)
    wheel = "cu" + cuda.replace(".", "")
    assert torch_pin(BODY).endswith("+" + wheel)
    assert post_call(BODY)[1] == f"https://download.pytorch.org/whl/{wheel}"
    assert cuda in TOOLKIT_DRIVER and cuda.split(".")[0] in MINOR_COMPAT_DRIVER
    assert cuda in BODY["help"]


def test_the_defs_share_files_arguments_labels_and_runscript() -> None:
    """What apptainer cannot include from a file is kept identical (the title aside)."""
    for section in ("arguments", "files", "runscript"):
        assert BODY[section] == CPU_BODY[section], section
    assert BODY["labels"].replace("lyricgen\n", "lyricgen-cpu\n", 1) == CPU_BODY["labels"]
    entries = [line.split() for line in BODY["files"].splitlines() if line.strip()]
    assert {src for src, _ in entries} == {"pyproject.toml", "README.md", "containers", "jobs",
                                           "kindspec", "lyricgen", "templates"}
    for src, dst in entries:
        assert dst == f"/opt/lyricgen/{src}"
        assert (REPO / src).exists(), f"%files source {src} is missing from the checkout"


@BOTH
def test_post_environment_and_test_use_the_shared_files(body: dict[str, str]) -> None:
    requirements, index = post_call(body)
    assert requirements.is_file() and index.startswith("https://download.pytorch.org/whl/")
    assert body["environment"].strip().splitlines()[0] == ". /opt/lyricgen/containers/env.sh"
    assert body["test"].strip().splitlines()[0] == (
        f"python3 /opt/lyricgen/containers/pins.py --exact /opt/lyricgen/containers/"
        f"{requirements.name}")
    assert not re.search(r"TOKEN|SECRET|PASSWORD", body["post"], re.I)


def test_build_args_match_the_arguments_section_and_the_placeholders() -> None:
    for path in (DEF, CPU_DEF):
        body = sections(path.read_text(encoding="utf-8"))[1]
        declared = {line.split("=")[0].strip() for line in body["arguments"].splitlines()
                    if line.strip()}
        used = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", path.read_text(encoding="utf-8")))
        # apptainer refuses build args the def does not use, and placeholders without a value.
        assert declared == used == set(image.build_args(REPO)), path
        for key in ("version", "commit", "built"):
            assert re.search(rf"^\s*{re.escape(image.LABELS[key])} \{{\{{", body["labels"], re.M)


def test_post_script_installs_pins_then_the_project_and_checks_them() -> None:
    post = (CONTAINERS / "post.sh").read_text(encoding="utf-8")
    steps = ['-m pip install "$@" -r "$REQUIREMENTS"', "--no-deps --no-build-isolation "
             "/opt/lyricgen", "-m pip check", 'containers/pins.py --exact "$REQUIREMENTS"']
    assert [post.index(step) for step in steps] == sorted(post.index(step) for step in steps)
    for key in ("cuda", "torch", "python"):
        assert f'echo "{image.LABELS[key]} $(' in post
    assert image.BUILD_INPUTS_AT == "/mnt" and "INPUTS=/mnt\n" in post
    assert not re.search(r"TOKEN|SECRET|PASSWORD", post, re.I)


@pytest.mark.parametrize("section", ["post", "environment", "test", "runscript"])
@BOTH
def test_shell_sections_parse(body: dict[str, str], section: str) -> None:
    result = subprocess.run(["sh", "-n"], input=body[section], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", ["post.sh", "env.sh"])
def test_shared_shell_files_parse(name: str) -> None:
    result = subprocess.run(["sh", "-n", str(CONTAINERS / name)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stderr


def environment(env_sh: str, **given: str) -> str:
    script = env_sh + '\nprintf "%s|%s|%s\\n" "$HF_HOME" "$MPLCONFIGDIR" "$HF_HUB_OFFLINE"'
    return subprocess.run(["sh", "-c", script], env={"PATH": os.environ["PATH"], **given},
                          capture_output=True, text=True, check=True).stdout.strip()


def test_environment_defaults_cover_the_runtime_caches_and_yield_to_given_values(
        tmp_path: Path) -> None:
    text = (CONTAINERS / "env.sh").read_text(encoding="utf-8")
    for name in CACHE_ENV_DIRS:
        assert re.search(rf'^export {name}="\${{{name}:-\$lyricgen_cache/', text, re.M), name
    cache = tmp_path / "cache"  # stands in for the image's /cache
    cache.mkdir()
    env_sh = text.replace("lyricgen_cache=/cache\n", f"lyricgen_cache={cache}\n")
    assert env_sh != text
    assert environment(env_sh) == f"{cache}/huggingface|{cache}/matplotlib|1"
    assert environment(env_sh, HF_HOME="/scratch/hf", HF_HUB_OFFLINE="0") == \
        f"/scratch/hf|{cache}/matplotlib|0"
    # /cache without a bind is read-only; a missing directory is not writable either.
    unbound = env_sh.replace(f"lyricgen_cache={cache}\n", f"lyricgen_cache={cache}-unbound\n")
    tmp = tmp_path / "tmp"
    assert environment(unbound, TMPDIR=str(tmp)) == \
        f"{tmp}/lyricgen-cache/huggingface|{tmp}/lyricgen-cache/matplotlib|1"


def test_runscript_and_help_run_lyricgen() -> None:
    for body in (BODY, CPU_BODY):
        assert body["runscript"].strip() == 'exec python3 -m lyricgen "$@"'
        assert "python3 -m lyricgen" in body["help"]
    assert "apptainer exec --nv" in BODY["help"]


def self_test_code(body: dict[str, str]) -> str:
    match = re.search(r"python3 - <<'PY'\n(.*?)\nPY$", body["test"], re.S | re.M)
    assert match, "%test must run its Python through a quoted heredoc"
    return match.group(1)


def run_self_test(body: dict[str, str], **env: str) -> subprocess.CompletedProcess[str]:
    """A def's %test Python, run by the host venv's interpreter with this checkout."""
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", self_test_code(body)], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": path, **env}, capture_output=True,
                          text=True, timeout=300, check=False)


def test_self_test_rejects_a_torch_without_the_promised_cuda() -> None:
    """The GPU image's %test imports the whole stack and refuses a torch that is not the
    promised CUDA build (a CPU torch in the image is the classic silent failure). Here torch
    is normally the CPU build; with a matching CUDA torch the test instead passes (it then
    runs the 4-bit matmul when a GPU is visible)."""
    result = run_self_test(BODY, LYRICGEN_IMAGE_CUDA=image_cuda())
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


def test_cpu_self_test_passes_with_the_host_venv() -> None:
    """The CPU image's %test Python accepts the host venv (the same packages, a CPU torch)
    and runs its bf16 autocast LSTM check; in the image it runs at build time."""
    import torch

    result = run_self_test(CPU_BODY)
    if torch.version.cuda is not None:
        assert result.returncode == 1 and "FAIL: the CPU image holds torch" in result.stderr
        return
    assert result.returncode == 0, result.stdout + result.stderr
    lstm_check = (r"bf16 autocast LSTM max abs error \S+" if cpu_has_native_bf16() else
                  r"bf16 autocast LSTM skipped \(no bf16 instructions here\)")
    assert re.fullmatch(r"ok: lyricgen \S+ \| torch 2\.13\.0\+cpu \(CPU\) \|.*\| " + lstm_check,
                        result.stdout.strip()), result.stdout


# --- the pinned packages -----------------------------------------------------------------

def test_requirements_are_all_pinned_and_agree_with_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    wanted = [*project["dependencies"], *project["optional-dependencies"]["gpu"]]
    for body in (BODY, CPU_BODY):
        versions = pins.read_pins(post_call(body)[0])  # refuses anything but name==version
        assert versions.keys() - {"torch"} == pins.read_pins(SHARED_REQUIREMENTS).keys()
        for spec in map(Requirement, wanted):
            name = canonicalize_name(spec.name)
            assert name in versions, f"{name} (pyproject) is not pinned for the images"
            assert spec.specifier.contains(versions[name], prereleases=True), (spec, versions[name])


def dependency_closure(root: str, extras: set[str]) -> set[str]:
    """Canonical names of every installed distribution `root[extras]` needs on this
    platform, recursively (markers evaluated), root excluded."""
    seen: set[str] = set()
    todo = [(root, extras)]
    while todo:
        name, wanted = todo.pop()
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            env = default_environment()
            if req.marker and not any(req.marker.evaluate({**env, "extra": extra})
                                      for extra in wanted or {""}):
                continue
            dep = canonicalize_name(req.name)
            if dep not in seen:
                seen.add(dep)
                todo.append((dep, set(req.extras)))
    return seen


def test_shared_pins_are_closed_and_the_host_venv_matches_them() -> None:
    """requirements.txt pins every package lyricgen[gpu] pulls in (torch aside, pinned per
    image), and `make setup` (pip -c requirements.txt) installed exactly those versions: the
    host venv and the images hold the same packages."""
    shared = pins.read_pins(SHARED_REQUIREMENTS)
    needed = dependency_closure("lyricgen", {"gpu"})
    assert needed - shared.keys() == {"torch"}, "unpinned: " + ", ".join(
        sorted(needed - shared.keys() - {"torch"}))
    assert pins.problems(shared, pins.installed(), exact=False) == [], "run `make setup`"
    host_torch = metadata.version("torch")
    assert host_torch.split("+")[0] == torch_pin(CPU_BODY).split("+")[0]


def test_pins_reads_includes_and_refuses_other_lines(tmp_path: Path) -> None:
    (tmp_path / "base.txt").write_text("# c\nFoo_Bar==1.0  # why\n\nbaz==2.0\n")
    (tmp_path / "top.txt").write_text("-r base.txt\ntorch==2.13.0+cpu\n")
    assert pins.read_pins(tmp_path / "top.txt") == {"foo-bar": "1.0", "baz": "2.0",
                                                   "torch": "2.13.0+cpu"}
    for bad, message in [("foo>=1.0\n", "expected `name==version` or `-r FILE`"),
                         ("foo==1.0\nfoo==1.1\n", "foo pinned twice (1.0, 1.1)"),
                         ("-r top.txt\n", "includes itself"),
                         ("-r missing.txt\n", "cannot read")]:
        (tmp_path / "top.txt").write_text(bad)
        with pytest.raises(pins.BadFile, match=re.escape(message)):
            pins.read_pins(tmp_path / "top.txt")


def test_pins_problems_and_exit_codes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    have = {"numpy": "2.4.6", "pip": "26.3", "lyricgen": "0.1.0", "extra": "1.0"}
    pinned = {"numpy": "2.4.6", "missing": "1.0"}
    assert pins.problems(pinned, have, exact=False) == ["missing: pinned 1.0, not installed"]
    assert pins.problems({"numpy": "2.4.7"}, have, exact=True) == [
        "numpy: pinned 2.4.7, installed 2.4.6", "extra 1.0 is installed but not pinned"]
    # torch pins its nvidia-* wheels with ==: at that version they need no pin of their own.
    requires = {"torch": ["nvidia-nccl-cu12==2.27.5; platform_system == 'Linux'", "sympy>=1"]}
    monkeypatch.setattr(pins, "metadata", SimpleNamespace(requires=requires.get))
    cuda = {"torch": "2.13.0+cu128", "nvidia-nccl-cu12": "2.27.5", "sympy": "1.14.0"}
    assert pins.problems({"torch": "2.13.0+cu128", "sympy": "1.14.0"}, cuda, exact=True) == []
    assert pins.problems({"torch": "2.13.0+cu128"}, cuda, exact=True) == [
        "sympy 1.14.0 is installed but not pinned"]
    cuda["nvidia-nccl-cu12"] = "2.27.6"
    assert pins.problems({"torch": "2.13.0+cu128", "sympy": "1.14.0"}, cuda, exact=True) == [
        "nvidia-nccl-cu12 2.27.6 is installed but not pinned"]
    monkeypatch.undo()
    good = tmp_path / "good.txt"
    good.write_text(f"numpy=={metadata.version('numpy')}\n")
    bad = tmp_path / "bad.txt"
    bad.write_text("numpy==0.0.1\n")
    script = CONTAINERS / "pins.py"
    ok = subprocess.run([sys.executable, str(script), str(good)], capture_output=True,
                        text=True, check=False)
    assert ok.returncode == 0 and ok.stdout == ("ok: 1 pinned packages installed at their "
                                                "versions (good.txt)\n")
    failed = subprocess.run([sys.executable, str(script), str(bad)], capture_output=True,
                            text=True, check=False)
    assert failed.returncode == 1
    assert failed.stdout == f"FAIL: numpy: pinned 0.0.1, installed {metadata.version('numpy')}\n"
    bad.write_text("numpy>=1\n")
    refused = subprocess.run([sys.executable, str(script), str(bad)], capture_output=True,
                             text=True, check=False)
    assert refused.returncode == 2 and refused.stderr.startswith(f"{bad}:1: expected")


# --- command lines and parsing (pure) ------------------------------------------------------

def test_build_argv() -> None:
    args = {"VERSION": "0.1.0", "GIT_COMMIT": "abc", "BUILD_DATE": "2026-01-02T03:04:05Z"}
    assert image.build_argv(Path("/r/containers/lyricgen.def"), Path("/o/.x.sif.building-1"),
                            args) == [
        "apptainer", "build", "--build-arg", "VERSION=0.1.0", "--build-arg", "GIT_COMMIT=abc",
        "--build-arg", "BUILD_DATE=2026-01-02T03:04:05Z", "/o/.x.sif.building-1",
        "/r/containers/lyricgen.def"]
    assert image.build_argv(Path("d.def"), Path("t"), {}, sandbox=True, fakeroot=True,
                            binds=["/tmp/in:/mnt:ro"], compression="zstd") == [
        "apptainer", "build", "--fakeroot", "--sandbox", "--bind", "/tmp/in:/mnt:ro", "t",
        "d.def"]  # a sandbox is not compressed
    assert image.build_argv(Path("d.def"), Path("t"), {}, compression="zstd") == [
        "apptainer", "build", "--mksquashfs-args", "-comp zstd -Xcompression-level 3", "t",
        "d.def"]


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
    assert image.space_problems(tmp_path / "x.sif", tmp_path, image.CPU_SIZES,
                                sandbox=False) == []
    huge_tmp = image.BuildSizes(image=1, sandbox=1, tmp=10**18)
    [problem] = image.space_problems(tmp_path / "x.sif", tmp_path, huge_tmp, sandbox=True)
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
    for arg; do  # the build inputs, as post.sh would see them at /mnt
      case "$arg" in
        *:/mnt:ro) (cd "${arg%%:*}" && find . -type f | sort) > "$FAKE_LOG.inputs" ;;
      esac
    done
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
    for name in ("PIP_CERT", "PIP_FIND_LINKS"):  # the build inputs' defaults
        monkeypatch.delenv(name, raising=False)
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
    monkeypatch.setitem(image.SIZES, DEF.name, image.BuildSizes(image=10**18, sandbox=1, tmp=1))
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

def test_cpu_flag_profile_image_def_and_def_conflict(fake_apptainer: Path,
                                                     tmp_path: Path) -> None:
    built = CliRunner().invoke(image.image_group, ["build", "--cpu"])
    assert built.exit_code == 0, built.output
    cpu_image = tmp_path / "images" / "lyricgen-cpu.sif"
    assert cpu_image.read_text() == f"image built from {CPU_DEF}\n"
    assert "cuda:      12.8" in built.output  # the stand-in's labels
    profile = tmp_path / "p.yaml"
    profile.write_text(f"runtime: apptainer\nimage: other.sif\nimage_def: {CPU_DEF}\n")
    by_profile = CliRunner().invoke(image.image_group, ["build", "--profile", str(profile)])
    assert by_profile.exit_code == 0, by_profile.output
    assert (tmp_path / "other.sif").read_text() == f"image built from {CPU_DEF}\n"
    both = CliRunner().invoke(image.image_group, ["build", "--cpu", "--def", str(DEF)])
    assert both.exit_code == 2 and both.output == (
        "jobctl: error: --cpu builds containers/lyricgen-cpu.def: give --cpu or --def, not "
        "both\n")
    plain = CliRunner().invoke(image.image_group, ["build", "--no-fakeroot", "--out", "g.sif"])
    assert plain.exit_code == 0, plain.output
    builds = [line.split()[1:4] for line in fake_apptainer.read_text().splitlines()
              if line.split()[1] == "build"]
    assert builds[0][:2] == ["build", "--fakeroot"] and builds[-1][1] == "--build-arg"


def test_build_inputs_are_staged_and_bound_read_only(fake_apptainer: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "wheels1", tmp_path / "wheels2"
    for folder, body in ((first, "one"), (second, "two")):
        folder.mkdir()
        (folder / "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl").write_text(body)
    (second / "other-1.0-py3-none-any.whl").write_text("other")
    (second / "notes.txt").write_text("not a wheel")
    bundle = tmp_path / "proxy.crt"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    monkeypatch.setenv("PIP_CERT", str(bundle))  # the defaults: pip's own settings
    monkeypatch.setenv("PIP_FIND_LINKS", f"{first} file://{second} https://example.org/w")
    result = CliRunner().invoke(image.image_group, ["build", "--cpu"])
    assert result.exit_code == 0, result.output
    assert "note: --find-links https://example.org/w is not a local directory" in result.output
    build = next(line for line in fake_apptainer.read_text().splitlines() if " build " in line)
    bind = re.search(r"--bind (\S+):/mnt:ro ", build)
    assert bind and not Path(bind.group(1)).exists()  # removed after the build
    assert Path(f"{fake_apptainer}.inputs").read_text().splitlines() == [
        "./ca/0-proxy.crt", "./wheels/other-1.0-py3-none-any.whl",
        "./wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"]
    explicit = CliRunner().invoke(image.image_group, [
        "build", "--cpu", "--force", "--ca-bundle", str(tmp_path / "missing.crt")])
    assert explicit.exit_code == 2
    assert explicit.output.endswith(f"jobctl: error: --ca-bundle {tmp_path}/missing.crt: no "
                                    "such file\n")
    monkeypatch.delenv("PIP_CERT")
    monkeypatch.delenv("PIP_FIND_LINKS")
    bare = CliRunner().invoke(image.image_group, ["build", "--cpu", "--force"])
    assert bare.exit_code == 0 and "--bind" not in fake_apptainer.read_text().splitlines()[-2]


def test_stage_build_inputs_keeps_the_first_wheel_of_a_name(tmp_path: Path) -> None:
    first, second, stage = tmp_path / "a", tmp_path / "b", tmp_path / "stage"
    for folder in (first, second):
        folder.mkdir()
        (folder / "x-1.0-py3-none-any.whl").write_text(folder.name)
    stage.mkdir()
    assert image.stage_build_inputs(stage, [], [str(first), str(second)]) == []
    assert (stage / "wheels" / "x-1.0-py3-none-any.whl").read_text() == "a"
    with pytest.raises(image.UsageError, match="--find-links .*/nope: no such directory"):
        image.stage_build_inputs(stage, [], [str(tmp_path / "nope")])


# --- the real thing --------------------------------------------------------------------

@pytest.mark.skipif(shutil.which("apptainer") is None,
                    reason="apptainer is not installed (Debian 12: make apptainer)")
def test_gpu_def_passes_apptainers_parser(tmp_path: Path) -> None:
    """apptainer itself parses the GPU def and fills in jobctl's build args (it refuses
    unknown sections, undefined placeholders and unused build args before anything else);
    its base is renamed to an unresolvable registry (RFC 2606 .invalid), so the build stops
    at the first download instead of pulling several GiB."""
    text = DEF.read_text(encoding="utf-8")
    gpu = tmp_path / "lyricgen.def"
    gpu.write_text(text.replace(f"From: {HEADER['From']}", f"From: registry.invalid/"
                                                           f"{HEADER['From']}"))
    argv = image.build_argv(gpu, tmp_path / "x.sif", image.build_args(REPO))
    result = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120,
                            check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and "Fetching OCI image" in output, output
    assert "registry.invalid" in output.splitlines()[-1], output


@pytest.mark.slow
@pytest.mark.timeout(image.BUILD_TIMEOUT_S)
@pytest.mark.skipif(os.environ.get("LYRICGEN_TEST_GPU_BUILD") != "1",
                    reason="the GPU image pulls its CUDA base from Docker Hub and torch from "
                           "PyTorch's index (~20 GiB, tens of minutes): set "
                           "LYRICGEN_TEST_GPU_BUILD=1 where both are reachable")
def test_real_gpu_build_and_run(tmp_path: Path) -> None:
    """Builds the GPU image, then runs lyricgen in it and reads its labels; the %test runs
    during the build."""
    out = tmp_path / "lyricgen.sif"
    built = CliRunner().invoke(image.image_group, ["build", "--out", str(out)])
    assert built.exit_code == 0, built.output
    info = CliRunner().invoke(image.image_group, ["info", str(out)])
    assert info.exit_code == 0 and "cuda:      12.8" in info.output
    run = subprocess.run(image.exec_argv(out, ["python3", "-m", "lyricgen", "--help"]),
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0 and "lyricgen" in run.stdout, run.stderr


def test_cpu_image_self_test_labels_and_pins(cpu_image: Path) -> None:
    """The built CPU image: its %test passes, its labels name the CPU torch of the host venv,
    and it holds exactly the pinned packages."""
    tested = subprocess.run(image.test_argv(cpu_image, nv=False), capture_output=True,
                            text=True, timeout=600, check=False)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    lines = tested.stdout.strip().splitlines()
    assert lines[0] == f"ok: {len(pins.read_pins(CONTAINERS / 'requirements-cpu.txt'))} pinned " \
        "packages installed at their versions, nothing unpinned (requirements-cpu.txt)"
    assert lines[-1].startswith("ok: lyricgen 0.1.0 | torch 2.13.0+cpu (CPU) |")
    labels = image.read_labels(cpu_image)
    assert labels[image.LABELS["cuda"]] == image.CPU_CUDA
    assert labels[image.LABELS["torch"]] == metadata.version("torch")
    assert labels[image.LABELS["python"]].startswith("3.11.")
    # this checkout's pins, not only those the (possibly cached) image was built with
    here = subprocess.run(image.exec_argv(cpu_image, [
        "python3", str(CONTAINERS / "pins.py"), "--exact",
        str(CONTAINERS / "requirements-cpu.txt")], binds=[f"{REPO}:{REPO}:ro"]),
        capture_output=True, text=True, timeout=600, check=False)
    assert here.returncode == 0, here.stdout + here.stderr


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
