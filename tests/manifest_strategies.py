"""Hypothesis strategies and mutations that make (mostly) bad manifests, for
tests/test_manifest_fuzz.py.

* `yaml_documents()`: arbitrary nested mappings/lists/scalars with weird keys, YAML-looking
  text and shared sub-values (dumped as anchors + aliases), serialised by yaml.safe_dump;
* `manifest_documents()`: job and pipeline mappings shaped like real manifests, with values
  that are often valid for the kind registry's params and sometimes not;
* `raw_inputs()`: random bytes, random text and YAML-token soup (non-UTF-8 bytes, NULs, BOMs,
  tabs, CR/NEL/U+2028 line breaks, long lines, escapes of lone surrogates);
* `mutate(example_bytes, pick)`: one random edit of a manifest, textual (truncate, swap, delete
  or duplicate a line, insert garbage, splice a hostile value) or structural (delete or
  rename a key, replace a value by one of another type).

`Pick` hides where randomness comes from: `HypothesisPick(draw)` inside @given tests, or
`RandomPick(random.Random(seed))` to make a fixed set of cases (the CLI test).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import yaml
from hypothesis import strategies as st

from jobs.yamlsafe import parse_yaml, plain
from kindspec.registry import KINDS
from kindspec.schema import Param

T = TypeVar("T")
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)
JOB_KEYS = ["kind", "name", "profile", "needs", "resources", "params", "matrix", "throttle"]
KEY_WORDS = [*JOB_KEYS, "jobs", "extra", "gpus", "cpus", "mem", "time", "nodes", "partition",
             "<<", "=", "?", "- x", "a.b", "a\nb", "\u2028", "", " ",
             *sorted({name for kind in KINDS.values() for name in kind.params})]
# Strings whose meaning changes if anything ever evaluates, expands or re-parses them.
HOSTILE = [
    "$(touch jobctl-pwned)", "`touch jobctl-pwned`", "${HOME}", "$HOME",
    "it's \"quoted\"", "a'b\"c\\d", "'", '"', "\\", "two\nlines", "\r\n", "\ttab",
    "{{ 7*7 }}", "{% raw %}x{% endraw %}", "{{ needs.raw.outputs.songs }} trailing",
    "{#", "; rm -rf / #", "| cat /etc/passwd", "&& echo pwned", "\x00nul", "\x1b[31mred",
    "'; DROP TABLE songs; --", "%s%n%x", "-n", "--config=/etc/passwd", " padded ", "",
    "=", "<<", "~", "null", "true", "no", "1e5", "0x10", "4:00:00", "2024-01-01",
    "!!python/object/apply:os.system", "&anchor", "*alias", "# not a comment", "- item",
    "key: value", "[a, b]", "{a: b}", "\ufeffbom", "line\u2028sep", "nel\x85", "ünïcödé 🎤",
    "x" * 3000,
]
YAMLISH = ["!!python/object/apply:os.system", "!!binary aGk=", "!!int x", "&a x", "*a", "<<",
           "=", "~", "null", "Null", "yes", "off", "4:00:00", "0x_", "0o7", "007", "1e5",
           "5e-5", ".inf", "-.nan", "2024-01-01", "{{ needs.a.outputs.songs }}", "%YAML 1.1",
           "---", "...", "? x", "| x", "> x", "@x", "`x`", "#x", "\t", "\x85", "\ufeff",
           "\ud800", "a\udfffb", "\x1e"]  # lone surrogates: escaped or raw (invalid UTF-8)
# Scalars spliced raw into a manifest line: YAML meaning (tags, anchors, escapes) included.
RAW_SCALARS = ["9" * 4400, "0x_", "0x" + "f" * 40, "-0", "!!int x", "!!bool maybe", "!!float",
               "!!str 5", "!!null x", "=", "<<", '"\\ud800"', '"\\ud83d\\ude00"', '"\\x1e"',
               '"a\\nb"', "&a x", "*a", "*nope", "!!python/name:os.system", "[", "{", "'open",
               "|", ">"]
BROKEN_TEXT = ["\ud800", "a\udfffb", "\x1e", "\x00"]  # lone surrogates, separators, NUL
TOKENS = [
    b"kind: ", b"scrape", b"clean", b"train-rnn", b"name: ", b"params:", b"jobs:",
    b"needs: [", b"matrix:", b"resources:", b"- ", b"\n", b"  ", b"    ", b"\t", b": ", b":",
    b"{", b"}", b"[", b"]", b", ", b'"', b"'", b"&a ", b"*a", b"<<: ", b"<<", b"!!int ",
    b"!!bool ", b"!!float ", b"!!str ", b"!!map ", b"!!seq ", b"!!python/object/apply:os.system ",
    b"!!binary ", b"!custom ", b"!<tag:yaml.org,2002:int> ", b"? ", b"|", b">-", b"#", b"---\n",
    b"...\n", b"%YAML 1.1\n", b"%TAG ! tag:x,2002:\n", b"\x00", b"\xef\xbb\xbf", b"\xff",
    b"\xc3", b"\xc3\xa9", b"\r", b"\r\n", b"\xc2\x85", b"\xe2\x80\xa8", b"\x1b", b"\x7f",
    b"\x1e", b'"\\ud800"', b'"\\x00"', b'"\\N"', b"0x_", b"9" * 25, b"9" * 4400,
    b"0x" + b"f" * 40, b"=", b"~", b"null", b"yes", b"1e9999", b".nan",
    b"{{ needs.a.outputs.songs }}", b"x" * 5000,
]


class Pick(Protocol):
    """A source of choices for the mutations."""

    def index(self, size: int) -> int:
        """An int in [0, size)."""

    def choice(self, options: Sequence[T]) -> T:
        """One of `options`."""


class HypothesisPick:
    """Choices drawn by hypothesis (so failures shrink and replay)."""

    def __init__(self, draw: Callable[[st.SearchStrategy[Any]], Any]) -> None:
        self.draw = draw

    def index(self, size: int) -> int:
        return self.draw(st.integers(0, size - 1))

    def choice(self, options: Sequence[T]) -> T:
        return self.draw(st.sampled_from(options))


class RandomPick:
    """Choices from a seeded random.Random (fixed cases without hypothesis)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def index(self, size: int) -> int:
        return self.rng.randrange(size)

    def choice(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)


# --- whole documents -------------------------------------------------------------------------

def scalars() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(), st.booleans(), st.integers(), st.integers(-2**70, 2**70), st.floats(),
        TEXT, st.text(max_size=8), st.sampled_from(YAMLISH + HOSTILE + sorted(KINDS)))


def keys() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(KEY_WORDS), TEXT, st.integers(-3, 3), st.booleans(),
                     st.none(), st.floats(allow_nan=False))


def nested(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists and mappings of `leaves`; `[v, v]` makes a shared value (anchor + alias)."""
    return st.recursive(leaves, lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys(), children, max_size=4),
        children.map(lambda value: [value, value])), max_leaves=20)


@st.composite
def dumped(draw: Callable[..., Any], documents: st.SearchStrategy[Any]) -> bytes:
    """A document as yaml.safe_dump writes it, in a random style (flow/block, escaped/raw
    unicode, quoted/plain); `surrogatepass` keeps lone surrogates as (invalid) bytes."""
    text = yaml.safe_dump(draw(documents), sort_keys=False,
                          allow_unicode=draw(st.booleans()),
                          default_flow_style=draw(st.sampled_from([None, False, True])),
                          default_style=draw(st.sampled_from([None, '"', "'"])))
    return text.encode("utf-8", "surrogatepass")


def yaml_documents() -> st.SearchStrategy[bytes]:
    """Any nested value, or (more often) a mapping with a known kind and random keys."""
    kinds = st.fixed_dictionaries({"kind": st.sampled_from(sorted(KINDS))})
    extra = st.dictionaries(keys(), nested(scalars()), max_size=5)
    mappings = st.builds(lambda base, more: {**base, **more}, kinds, extra)
    return dumped(st.one_of(nested(scalars()), mappings, mappings))


def _number(param: Param, integer: bool) -> st.SearchStrategy[Any]:
    low = -10**6 if param.min is None else param.min
    high = 10**6 if param.max is None else param.max
    if integer:
        return st.integers(int(low), int(high))
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def plausible(param: Param) -> st.SearchStrategy[Any]:
    """Values of the param's type (mostly valid: ranges and choices respected)."""
    item_type = {"str_list": "str", "float_list": "float", "int_list": "int"}.get(param.type)
    if item_type is not None:
        item = plausible(Param(item_type, min=param.min, max=param.max, choices=param.choices))
        value = st.lists(item, max_size=4)
    elif param.choices is not None:
        value = st.sampled_from(param.choices)
    elif param.type in ("int", "float"):
        value = _number(param, param.type == "int")
    elif param.type == "bool":
        value = st.booleans()
    elif param.type == "dict":
        value = st.dictionaries(TEXT, scalars(), max_size=3)
    else:  # str, path
        value = st.one_of(TEXT, st.sampled_from(HOSTILE), st.sampled_from(BROKEN_TEXT))
    return st.one_of(value, st.none()) if param.nullable else value


@st.composite
def job_document(draw: Callable[..., Any], name: str | None = None,
                 others: Sequence[str] = ()) -> dict[str, Any]:
    """One job mapping: a (mostly) known kind, its required and some optional params, and
    sometimes name, profile, needs/output references, resources, matrix, throttle or an
    unknown key."""
    kind_name = draw(st.sampled_from([*sorted(KINDS) * 4, "claen", "", "Scrape"]))
    doc: dict[str, Any] = {"kind": kind_name}
    kind = KINDS.get(kind_name)
    if name is not None:
        doc["name"] = name
    if kind is not None:
        params = {key: draw(plausible(param)) for key, param in kind.params.items()
                  if param.required or draw(st.integers(0, 5)) == 0}
        if others and draw(st.booleans()):
            target = draw(st.sampled_from(others))
            output = draw(st.sampled_from([*sorted(KINDS["scrape"].outputs), "nope"]))
            path_params = [k for k, p in kind.params.items() if p.type == "path"]
            if path_params:
                params[draw(st.sampled_from(path_params))] = (
                    f"{{{{ needs.{target}.outputs.{output} }}}}")
        doc["params"] = params
        if draw(st.integers(0, 3)) == 0:
            key = draw(st.sampled_from(sorted(kind.params)))
            doc["matrix"] = {key: draw(st.lists(plausible(kind.params[key]), max_size=3))}
            if draw(st.booleans()):
                doc["throttle"] = draw(st.integers(-1, 3))
    if others and draw(st.booleans()):
        doc["needs"] = draw(st.lists(st.sampled_from(list(others)), max_size=2))
    if draw(st.integers(0, 3)) == 0:
        doc["resources"] = draw(resources())
    if draw(st.integers(0, 4)) == 0:
        doc["profile"] = draw(st.sampled_from(["laptop", "cluster", "x.yaml", "bad name!", 3]))
    if draw(st.integers(0, 6)) == 0:
        doc[draw(keys())] = draw(scalars())
    return doc


def resources() -> st.SearchStrategy[dict[str, Any]]:
    values = {
        "gpus": st.integers(-1, 4), "cpus": st.integers(0, 64), "nodes": st.integers(0, 3),
        "mem": st.sampled_from(["512M", "16G", "1t", "0G", "16", "lots", 16]),
        "time": st.sampled_from(["30", "04:00:00", "2-00:00:00", "00:00:00", "4:61", 90, "1h"]),
        "partition": st.sampled_from(["gpu", "cpu,gpu", "a b", ""]),
        "extra": st.dictionaries(st.sampled_from(["account", "qos", "mem", "Account", "x y"]),
                                 st.one_of(TEXT, st.integers(0, 9)), max_size=2),
    }
    return st.fixed_dictionaries({}, optional=values)


@st.composite
def pipeline_document(draw: Callable[..., Any]) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "songs", "x.y-1"]), min_size=1,
                          max_size=3, unique=draw(st.integers(0, 9)) > 0))
    if draw(st.integers(0, 9)) == 0:
        names[0] = draw(st.sampled_from(["../x", "", "a b", "-a"]))
    jobs = [draw(job_document(name, names[:i] + names[i + 1:])) for i, name in enumerate(names)]
    doc: dict[str, Any] = {"jobs": jobs}
    if draw(st.booleans()):
        doc["name"] = draw(st.sampled_from(["demo", "demo", "demo", "bad name", ""]))
    return doc


def manifest_documents() -> st.SearchStrategy[bytes]:
    return dumped(st.one_of(job_document(), pipeline_document()))


# --- raw bytes --------------------------------------------------------------------------------

def raw_inputs() -> st.SearchStrategy[bytes]:
    """Random bytes or text, and soups of YAML tokens (with or without bad bytes)."""
    printable = [t for t in TOKENS if t.decode("utf-8", "replace").isprintable()]
    clean_soup = st.lists(st.sampled_from(printable + [b"\n", b"\n  "] * 8), max_size=40)
    soup = st.lists(st.one_of(st.sampled_from(TOKENS), st.binary(max_size=4)), max_size=40)
    return st.one_of(st.binary(max_size=300),
                     st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
                     soup.map(b"".join), clean_soup.map(b"".join), clean_soup.map(b"".join))


# --- mutations of a manifest -----------------------------------------------------------------

KEY_LINE = re.compile(rb"^(\s*)(?:- )?([A-Za-z_][\w-]*:)(.*)$")
_VALUE_LINE = re.compile(rb"^(\s*(?:- )?[A-Za-z_][\w-]*:[ ]+)\S.*$")
_BLOCK_SCALAR = re.compile(rb":\s*[|>][-+0-9]*\s*(?:#.*)?$")


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


def key_lines(data: bytes) -> list[int]:
    """Indices of the `key: ...` lines of a manifest, skipping the inside of block scalars."""
    found: list[int] = []
    block: int | None = None
    for index, line in enumerate(_lines(data)):
        indent = len(line) - len(line.lstrip())
        if block is not None and (not line.strip() or indent > block):
            continue
        block = None
        if KEY_LINE.match(line):
            found.append(index)
            block = indent if _BLOCK_SCALAR.search(line) else None
    return found


def truncate(data: bytes, pick: Pick) -> bytes:
    return data[:pick.index(len(data) + 1)]


def swap_lines(data: bytes, pick: Pick) -> bytes:
    lines = _lines(data)
    i, j = pick.index(len(lines)), pick.index(len(lines))
    lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def delete_line(data: bytes, pick: Pick) -> bytes:
    lines = _lines(data)
    del lines[pick.index(len(lines))]
    return b"\n".join(lines)


def insert_garbage(data: bytes, pick: Pick) -> bytes:
    lines = _lines(data)
    garbage = b"".join(pick.choice(TOKENS) for _ in range(1 + pick.index(4)))
    lines.insert(pick.index(len(lines) + 1), garbage)
    return b"\n".join(lines)


def duplicate_key_line(data: bytes, pick: Pick) -> bytes:
    """Copy a `key: value` line right below itself (a list item's `- ` becomes spaces)."""
    lines, candidates = _lines(data), key_lines(data)
    if not candidates:
        return data
    i = pick.choice(candidates)
    indent, key, rest = KEY_LINE.match(lines[i]).groups()
    offset = b"  " if lines[i].lstrip().startswith(b"- ") else b""
    lines.insert(i + 1, indent + offset + key + rest)
    return b"\n".join(lines)


def splice_hostile(data: bytes, pick: Pick) -> bytes:
    """Replace the value of a `key: value` line by a hostile string (raw or naively quoted)
    or by a raw YAML scalar with a meaning of its own (tag, alias, escape, huge number)."""
    lines = _lines(data)
    candidates = [i for i, line in enumerate(lines) if _VALUE_LINE.match(line)]
    if not candidates:
        return data
    i = pick.choice(candidates)
    text = pick.choice(HOSTILE)
    quoted = pick.choice([text, f"'{text}'", f'"{text}"', repr(text), *RAW_SCALARS])
    lines[i] = _VALUE_LINE.match(lines[i]).group(1) + quoted.encode("utf-8")
    return b"\n".join(lines)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key/index path inside nested dicts and lists."""
    found: list[tuple[Any, ...]] = []
    items = value.items() if isinstance(value, dict) else (
        enumerate(value) if isinstance(value, list) else ())
    for key, item in items:
        found.append((*prefix, key))
        found.extend(_paths(item, (*prefix, key)))
    return found


def _structural(edit: Callable[[Any, Any, Pick], None]) -> Callable[[bytes, Pick], bytes]:
    """A mutation that edits the parsed document (container, key) and dumps it again."""
    def mutation(data: bytes, pick: Pick) -> bytes:
        doc = plain(parse_yaml(data.decode("utf-8-sig"), "example"))
        paths = [p for p in _paths(doc) if edit is not _rename or isinstance(p[-1], str)]
        if not paths:
            return data
        path = pick.choice(paths)
        container = doc
        for part in path[:-1]:
            container = container[part]
        edit(container, path[-1], pick)
        return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True).encode("utf-8")

    mutation.__name__ = edit.__name__.lstrip("_")
    return mutation


def _delete(container: Any, key: Any, pick: Pick) -> None:
    del container[key]


def _rename(container: dict[str, Any], key: str, pick: Pick) -> None:
    """A typo: drop, double or swap a character, or change the case."""
    i = pick.index(len(key)) if key else 0
    typo = pick.choice([key[:i] + key[i + 1:], key[:i] + key[i:i + 1] * 2 + key[i + 1:],
                        key[:i] + key[i + 1:i + 2] + key[i:i + 1] + key[i + 2:],
                        key.upper(), key + "s"])
    if typo != key and typo not in container:
        container[typo] = container.pop(key)


OTHER_TYPES = [None, True, False, 0, -1, 7, 2**64, 1.5, float("nan"), float("inf"), "", "text",
               "4:00:00", [], ["a"], [[1]], {}, {"a": 1}, {"kind": "scrape"}]


def _retype(container: Any, key: Any, pick: Pick) -> None:
    current = container[key]
    options = [v for v in OTHER_TYPES if type(v) is not type(current)]
    container[key] = pick.choice(options)


MUTATIONS: list[Callable[[bytes, Pick], bytes]] = [
    truncate, swap_lines, delete_line, insert_garbage, duplicate_key_line, splice_hostile,
    _structural(_delete), _structural(_rename), _structural(_retype),
]


def mutate(data: bytes, pick: Pick) -> bytes:
    """One random mutation (see MUTATIONS) of a manifest's bytes."""
    return pick.choice(MUTATIONS)(data, pick)
