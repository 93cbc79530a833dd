"""Profiles (manifests/profiles/NAME.yaml): where and how jobs run, strictly validated.

`load_profile(name)` takes a profile name, looked up as NAME.yaml in the search dirs
(default: ./profiles, ./manifests/profiles, then this checkout's manifests/profiles), or a
path to a .yaml file. Keys are the fields of jobs.spec.Profile except `name` (the file name
without .yaml) and `source`; manifests/profiles/README.md explains each one.

Paths (image, image_def, binds, runs_dir, cache_dir) are kept exactly as written: relative ones are
relative to the project directory jobctl runs in. Nothing is shell-expanded, so `$VAR` and a
leading `~` are refused with a hint to write the path literally. Secrets never go in a
profile: an `env` name with a secret-like word (TOKEN, SECRET, PASSWORD, API_KEY) is
refused; list it in `env_passthrough` instead.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from jobs.errors import InputError
from jobs.resources import PARTITION, sbatch_options
from jobs.spec import SAFE_NAME, Profile, Source
from jobs.validate import (
    Where,
    clean_string,
    describe,
    did_you_mean,
    known_keys,
    mapping,
    sequence,
)
from jobs.yamlsafe import LineDict, load_yaml

REPO_PROFILES = Path(__file__).resolve().parents[1] / "manifests/profiles"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET = re.compile(r"(?:^|_)(?:TOKEN|SECRET|PASSWORD|PASSWD|API_KEY)(?:_|$)", re.I)
_MODULE = re.compile(r"[A-Za-z0-9_.+/-]+")
_GRES = re.compile(r"[A-Za-z0-9_.-]+(?::[A-Za-z0-9_.-]+)*")
# A Linux interface name (at most 15 bytes), as `ip addr show dev NAME` takes it.
_INTERFACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,14}")
_CHOICES = {"executor": ("local", "slurm"), "runtime": ("host", "apptainer")}
_PATHS = ("image", "image_def", "runs_dir", "cache_dir")
_LISTS = {"binds": None, "env_passthrough": (ENV_NAME, "an environment variable name"),
          "modules": (_MODULE, "a module name like cuda/12.1")}
_KEYS = ("executor", "runtime", "python", "image", "image_def", "binds", "env", "env_passthrough",
         "modules", "partition", "gpu_gres", "sbatch", "runs_dir", "cache_dir",
         "network_interface")


def default_search_dirs() -> list[Path]:
    """./profiles, ./manifests/profiles (relative to the cwd), then the checkout's own."""
    return [Path("profiles"), Path("manifests/profiles"), REPO_PROFILES]


def find_profile(name: str, search_dirs: list[Path] | None = None) -> Path:
    """The file for a profile name or .yaml path; InputError naming the dirs searched."""
    if name.endswith((".yaml", ".yml")) or "/" in name:
        return Path(name)
    dirs = default_search_dirs() if search_dirs is None else search_dirs
    if not SAFE_NAME.fullmatch(name):
        raise InputError("profile", None, "", f"invalid profile name {describe(name)}")
    for folder in dirs:
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    known = sorted({p.stem for d in dirs if d.is_dir() for p in d.glob("*.yaml")})
    raise InputError("profile", None, name, f"no such profile (looked for {name}.yaml in "
                     f"{', '.join(str(d) for d in dirs)}; known: {', '.join(known) or 'none'})"
                     f"{did_you_mean(name, known)}")


def load_profile(name: str, *, search_dirs: list[Path] | None = None) -> Profile:
    """Find, read and validate a profile (see the module docstring)."""
    path = find_profile(name, search_dirs)
    where = Where(str(path))
    _, doc = load_yaml(path)
    doc = mapping(doc, where, 1, "a mapping of profile keys")
    known_keys(doc, _KEYS, where)
    fields = {key: _field(key, value, where.at(key), doc.line_of(key))
              for key, value in doc.items()}
    if fields.get("runtime") == "apptainer" and not fields.get("image"):
        raise where.at("image").error(doc.line_of("runtime"), "runtime apptainer needs "
                                      "image: (the .sif file to run in)")
    return Profile(name=path.stem, source=Source(str(path), 1), **fields)


def _field(key: str, value: Any, where: Where, line: int) -> Any:
    if key in _CHOICES:
        if value not in _CHOICES[key]:
            raise where.error(line, f"expected one of {', '.join(_CHOICES[key])}, got "
                                    f"{describe(value)}{did_you_mean(value, _CHOICES[key])}")
        return value
    if key in _PATHS:
        return None if value is None else _path(value, where, line)
    if key in _LISTS:
        return _strings(value, where, line, _LISTS[key])
    if key == "env":
        return _env(value, where, line)
    if key == "sbatch":
        return sbatch_options(value, where, line)
    if key == "partition":
        return None if value is None else clean_string(value, where, line, PARTITION,
                                                       "a partition name")
    if key == "gpu_gres":
        return clean_string(value, where, line, _GRES, "a gres name like gpu or gpu:titanrtx")
    if key == "network_interface":
        return None if value is None else clean_string(value, where, line, _INTERFACE,
                                                       "a network interface name like ib0")
    return clean_string(value, where, line, what="an interpreter command or path")  # python


def _path(value: Any, where: Where, line: int, what: str = "a path") -> str:
    text = clean_string(value, where, line, what=what)
    if "$" in text or text.startswith("~"):
        raise where.error(line, f"{describe(text)}: paths are not shell-expanded; write the "
                                "path literally (relative paths are relative to the project "
                                "directory)")
    return text


def _strings(value: Any, where: Where, line: int,
             rule: tuple[re.Pattern[str], str] | None) -> tuple[str, ...]:
    items = sequence(value, where, line, "a list of strings")
    out = []
    for index, item in enumerate(items):
        at, item_line = where.at(index), items.line_of(index)
        if rule is None:  # binds: src[:dst[:opts]]
            out.append(_bind(item, at, item_line))
        else:
            out.append(clean_string(item, at, item_line, *rule))
    return tuple(out)


def _bind(value: Any, where: Where, line: int) -> str:
    text = _path(value, where, line, "a bind 'src[:dst[:ro|rw]]'")
    parts = text.split(":")
    bad_opts = len(parts) == 3 and parts[2] not in ("ro", "rw")
    if "," in text or len(parts) > 3 or not all(parts) or bad_opts:
        raise where.error(line, f"expected one bind 'src[:dst[:ro|rw]]' per list entry, got "
                                f"{describe(text)}")
    return text


def _env(value: Any, where: Where, line: int) -> dict[str, str]:
    given: LineDict = mapping(value, where, line, "a mapping of NAME: value")
    env: dict[str, str] = {}
    for key, item in given.items():
        at, key_line = where.at(key), given.line_of(key)
        clean_string(key, at, key_line, ENV_NAME, "an environment variable name")
        if _SECRET.search(key):
            raise at.error(key_line, "secrets never go in a profile; list the name in "
                                     "env_passthrough and set it in your environment")
        if isinstance(item, int | float) and not isinstance(item, bool):
            item = str(item)
        env[key] = _path(item, at, key_line, "a string value")
    return env
