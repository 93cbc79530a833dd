"""Read a YAML file strictly, remembering the 1-based line of every key and list item.

`load_yaml(path)` returns the text as read and the data, where mappings are `LineDict` and
sequences `LineList`: ordinary dict/list subclasses that also know where their keys and items
were written, so validators can report `path:line: key: message`. Every problem is an
`InputError` with a line:

* bytes that are not UTF-8 (the line and byte offset of the first bad byte), control
  characters YAML refuses, YAML syntax errors (line of the YAML mark), an empty file, more
  than one document;
* duplicate keys in any mapping (PyYAML silently keeps the last one);
* explicit tags other than the plain core ones (`!!python/object...`, `!!binary`, `!!set`,
  `!!timestamp`...): nothing is ever constructed from a tag, no code ever runs;
* documents that expand (through aliases) to more than `MAX_VALUES` values;
* values that do not fit an explicit core tag (`!!int abc`, `!!bool maybe`), integers outside
  the signed 64-bit range, and strings holding lone UTF-16 surrogates (`"\\ud800"`: not
  text, they cannot be written to config.json as UTF-8).

Pitfalls of YAML 1.1 that this loader deliberately turns off (closer to YAML 1.2):
`4:00:00` is the string "4:00:00", not the sexagesimal integer 14400; `yes`/`no`/`on`/`off`
are strings, only `true`/`false` are booleans; `2024-01-01` stays a string (no dates, which
JSON cannot hold); `5e-5` is the float 5e-05 (PyYAML reads it as a string); `007` is a
string, not octal 7; `=` and `<<` written as values are the strings "=" and "<<" (PyYAML
cannot construct either).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from jobs.errors import InputError

MAX_VALUES = 100_000  # anchors/aliases can make a small file expand enormously
INT_LIMIT = 2**63  # integers must fit in a signed 64-bit int (seeds, counts, sizes)
_MAX_INT_CHARS = 4000  # int() refuses > 4300 decimal digits; anything this long is too large
_TAG = "tag:yaml.org,2002:"
_CORE = {"null": "null", "bool": "boolean", "int": "integer", "float": "number", "str": "string"}
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class LineDict(dict):
    """A mapping that knows its own line and the line of each of its keys."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.key_lines: dict[Any, int] = {}

    def line_of(self, key: Any) -> int:
        """Line of `key` when present, else the mapping's own line."""
        return self.key_lines.get(key, self.line)


class LineList(list):
    """A sequence that knows its own line and the line of each item."""

    def __init__(self, line: int) -> None:
        super().__init__()
        self.line = line
        self.item_lines: list[int] = []

    def line_of(self, index: int) -> int:
        return self.item_lines[index] if 0 <= index < len(self.item_lines) else self.line


class _Problem(Exception):
    """Raised inside the loader; turned into an InputError once the path is known."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def _line(mark: yaml.Mark | None) -> int:
    return mark.line + 1 if mark is not None else 1


def _shown(text: str) -> str:
    """`text` quoted and escaped for an error message, shortened when long."""
    shown = repr(text)
    return shown if len(shown) <= 60 else shown[:57] + "..."


class StrictLoader(yaml.SafeLoader):
    """SafeLoader with line-aware containers, duplicate-key detection, a closed set of tags
    and the YAML 1.2-like scalar resolution described in the module docstring."""

    def construct_line_map(self, node: yaml.MappingNode):  # generator, like PyYAML's own
        data = LineDict(_line(node.start_mark))
        yield data
        if not isinstance(node, yaml.MappingNode):
            raise _Problem(_line(node.start_mark), "expected a mapping")
        own = {id(key) for key, _ in node.value if key.tag != _TAG + "merge"}
        self.flatten_mapping(node)
        written: set[Any] = set()
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, list | dict):
                raise _Problem(_line(key_node.start_mark), "a mapping key must be a plain value")
            if id(key_node) in own:
                if key in written:
                    raise _Problem(_line(key_node.start_mark), f"duplicate key {key!r}")
                written.add(key)
            data[key] = self.construct_object(value_node, deep=False)
            data.key_lines[key] = _line(key_node.start_mark)

    def construct_line_seq(self, node: yaml.SequenceNode):
        data = LineList(_line(node.start_mark))
        yield data
        if not isinstance(node, yaml.SequenceNode):
            raise _Problem(_line(node.start_mark), "expected a list")
        for item in node.value:
            data.append(self.construct_object(item, deep=False))
            data.item_lines.append(_line(item.start_mark))

    def construct_core_scalar(self, node: yaml.Node) -> Any:
        """A null, bool, int, float or str built by PyYAML's own constructor, or a _Problem for
        text that does not fit the tag (`!!int abc`, `!!bool maybe`, `0x_`), an integer
        outside the 64-bit range, or a string holding a lone surrogate (`"\\ud800"`)."""
        name, line = node.tag.removeprefix(_TAG), _line(node.start_mark)
        text = node.value if isinstance(node.value, str) else ""
        if name == "int" and len(text) > _MAX_INT_CHARS:
            raise _Problem(line, f"integer out of range: {_shown(text)}")
        try:
            value = yaml.SafeLoader.yaml_constructors[node.tag](self, node)
        except (ValueError, KeyError, IndexError):
            raise _Problem(line, f"{_shown(text)} is not a valid {_CORE[name]}") from None
        if name == "int" and not -INT_LIMIT <= value < INT_LIMIT:
            raise _Problem(line, f"integer out of range (64 bits): {_shown(text)}")
        if name == "str" and _SURROGATE.search(value):
            raise _Problem(line, f"{_shown(value)} holds a lone surrogate (an escape like "
                                 "\\ud800 is not a character); write the character itself")
        return value

    def construct_merge_text(self, node: yaml.Node) -> str:
        """`<<` written where a value goes (not as a merge key) is the text "<<"."""
        if not (isinstance(node, yaml.ScalarNode) and node.value == "<<"):
            self.construct_refused(node)
        return "<<"

    def construct_refused(self, node: yaml.Node) -> None:
        tag = node.tag.replace(_TAG, "!!")
        raise _Problem(_line(node.start_mark),
                       f"YAML tag {tag!r} is not allowed (only plain values, lists and mappings)")


def _setup_loader() -> None:
    """Replace SafeLoader's resolvers and constructors by the strict set."""
    StrictLoader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers
                if tag not in {_TAG + t for t in ("bool", "int", "float", "timestamp", "value")}]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    StrictLoader.add_implicit_resolver(
        _TAG + "bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    StrictLoader.add_implicit_resolver(
        _TAG + "int", re.compile(r"^(?:[-+]?(?:0|[1-9][0-9_]*)|0x[0-9a-fA-F_]+)$"),
        list("-+0123456789"))
    StrictLoader.add_implicit_resolver(
        _TAG + "float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
                    |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
        list("-+0123456789."))
    StrictLoader.yaml_constructors = {
        _TAG + name: StrictLoader.construct_core_scalar for name in _CORE
    }
    StrictLoader.add_constructor(_TAG + "merge", StrictLoader.construct_merge_text)
    StrictLoader.add_constructor(_TAG + "map", StrictLoader.construct_line_map)
    StrictLoader.add_constructor(_TAG + "seq", StrictLoader.construct_line_seq)
    StrictLoader.add_constructor(None, StrictLoader.construct_refused)


_setup_loader()


def read_text(path: Path) -> str:
    """The file's text, strictly UTF-8 (a leading BOM is dropped)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(path, None, "", f"cannot read file: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(path, line, "", f"not valid UTF-8: byte 0x{data[exc.start]:02x} at "
                                         f"byte offset {exc.start}") from None


def parse_yaml(text: str, path: str | Path) -> Any:
    """Parse one YAML document from `text` (read from `path`, used in errors)."""
    if not text.strip():
        raise InputError(path, 1, "", "the file is empty")
    try:
        data = _load(text)
    except _Problem as exc:
        raise InputError(path, exc.line, "", exc.message) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = " ".join(x for x in (exc.context, exc.problem) if x)
        raise InputError(path, _line(mark), "", f"YAML syntax error: {what}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise InputError(path, line, "", f"character U+{exc.character:04X} is not allowed "
                                         "in YAML") from None
    except RecursionError:
        raise InputError(path, 1, "", "the document is nested too deeply") from None
    if data is None:
        raise InputError(path, 1, "", "the file holds no YAML data (only comments?)")
    _check_size(data, path)
    return data


def _load(text: str) -> Any:
    loader = StrictLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_yaml(path: Path) -> tuple[str, Any]:
    """Read and parse `path`: (text as read, data with LineDict/LineList containers)."""
    text = read_text(path)
    return text, parse_yaml(text, path)


def count_values(data: Any, limit: int) -> int:
    """How many values (containers and scalars) `data` holds, an alias counted each time it
    is used; counting stops at `limit` + 1, so a bomb costs no more than that."""
    stack, seen = [data], 0
    while stack and seen <= limit:
        value = stack.pop()
        seen += 1
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return seen


def _check_size(data: Any, path: str | Path) -> None:
    """Refuse documents that expand beyond MAX_VALUES values (alias bombs)."""
    if count_values(data, MAX_VALUES) > MAX_VALUES:
        raise InputError(path, 1, "", f"the document expands to more than {MAX_VALUES} "
                                      "values (too many aliases?)")


def plain(value: Any) -> Any:
    """A deep copy with LineDict/LineList turned back into plain dict/list."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
