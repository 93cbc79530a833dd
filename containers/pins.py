"""Check that the Python packages installed here are the pinned ones.

    python3 containers/pins.py [--exact] REQUIREMENTS

REQUIREMENTS holds `name==version` lines, `-r OTHER` includes (relative to the including
file), comments and blank lines; anything else is refused (exit 2, `path:line: message`).
Every pinned package must be installed at exactly its version. With --exact (the images'
build and %test) every installed distribution must also be pinned, be the project itself or
pip, or be required with `==` by a pinned one (torch's nvidia-* and triton wheels): so no
package can reach an image at a version nobody chose.

Prints one `FAIL: ...` line per problem (exit 1), else one `ok: ...` line (exit 0). Runs
with the interpreter whose packages it checks; needs only the standard library and
`packaging` (itself pinned).
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import re
import sys
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

UNPINNED_OK = frozenset({"lyricgen", "pip"})
_INCLUDE = re.compile(r"^(?:-r|--requirement)\s+(\S+)$")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")


class BadFile(Exception):
    """A requirements line this checker does not accept (`path:line: message`)."""


def read_pins(path: Path, _seen: frozenset[Path] = frozenset()) -> dict[str, str]:
    """{canonical name: version} from `path` and the files it includes."""
    path = path.resolve()
    if path in _seen:
        raise BadFile(f"{path}: includes itself")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise BadFile(f"{path}: cannot read: {exc.strerror}") from exc
    pins: dict[str, str] = {}
    for number, raw in enumerate(lines, 1):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not line:
            continue
        include, pin = _INCLUDE.match(line), _PIN.match(line)
        if include:
            found = read_pins(path.parent / include.group(1), _seen | {path})
        elif pin:
            found = {canonicalize_name(pin.group(1)): pin.group(2)}
        else:
            raise BadFile(f"{path}:{number}: expected `name==version` or `-r FILE`, got "
                          f"{line!r}")
        for name, version in found.items():
            if pins.get(name, version) != version:
                raise BadFile(f"{path}:{number}: {name} pinned twice ({pins[name]}, {version})")
        pins.update(found)
    return pins


def installed() -> dict[str, str]:
    """{canonical name: version} of every distribution this interpreter can import."""
    return {canonicalize_name(dist.metadata["Name"]): dist.version
            for dist in metadata.distributions()}


def same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def exact_requirements(names: set[str]) -> dict[str, set[str]]:
    """{name: versions} that the given installed distributions require with `==`."""
    required: dict[str, set[str]] = {}
    for name in names:
        for text in metadata.requires(name) or []:
            try:
                req = Requirement(text)
            except InvalidRequirement:
                continue
            specs = list(req.specifier)
            if len(specs) == 1 and specs[0].operator == "==":
                required.setdefault(canonicalize_name(req.name), set()).add(specs[0].version)
    return required


def problems(pins: dict[str, str], have: dict[str, str], *, exact: bool) -> list[str]:
    """One message per pinned package missing or at another version, and with `exact` per
    installed distribution nobody pinned."""
    found = []
    for name, version in sorted(pins.items()):
        if name not in have:
            found.append(f"{name}: pinned {version}, not installed")
        elif not same_version(have[name], version):
            found.append(f"{name}: pinned {version}, installed {have[name]}")
    if exact:
        by_pinned = exact_requirements({name for name in pins if name in have})
        for name, version in sorted(have.items()):
            if name in pins or name in UNPINNED_OK:
                continue
            if not any(same_version(version, v) for v in by_pinned.get(name, ())):
                found.append(f"{name} {version} is installed but not pinned")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("requirements", type=Path)
    parser.add_argument("--exact", action="store_true",
                        help="also refuse installed distributions that are not pinned")
    args = parser.parse_args(argv)
    try:
        pins = read_pins(args.requirements)
    except BadFile as exc:
        print(exc, file=sys.stderr)
        return 2
    found = problems(pins, installed(), exact=args.exact)
    for message in found:
        print(f"FAIL: {message}")
    if found:
        return 1
    extra = ", nothing unpinned" if args.exact else ""
    print(f"ok: {len(pins)} pinned packages installed at their versions{extra} "
          f"({args.requirements.name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
