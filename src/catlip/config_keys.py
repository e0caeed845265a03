"""Every configuration key with its type, default and meaning, read from ``catlip/config.py`` itself.

The meaning of a field is the comment block directly above it plus its trailing comment; a section's meaning is
its class docstring. Both are read from the source with ``ast`` and ``tokenize``, so `catlip config keys` and
docs/config.md list exactly the fields the dataclasses have and cannot drift from them. A field without a comment
is an error here (and a test failure), not an empty cell. No torch import.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import textwrap
import tokenize
from dataclasses import dataclass
from pathlib import Path

import yaml

from catlip import config as config_module
from catlip.errors import CatlipError

DOCS_PATH = Path("docs") / "config.md"


@dataclass(frozen=True)
class Key:
    name: str  # section.field
    type: str
    default: str  # as it would be written in a recipe (YAML flow style)
    meaning: str


@dataclass(frozen=True)
class Section:
    name: str
    meaning: str
    keys: tuple[Key, ...]


def field_comments(source: str, class_name: str) -> tuple[str, dict[str, str]]:
    """(docstring, field -> comment text) of ``class_name`` in ``source``; fields without any comment map to ""."""
    tree = ast.parse(source)
    node = next((n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == class_name), None)
    if node is None:
        raise CatlipError(f"class {class_name} not found in the configuration source")
    comments = _comments_by_line(source)
    fields = {}
    for item in node.body:
        if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
            above = _block_above(comments, item.lineno)
            trailing = [comments[n][1] for n in range(item.lineno, item.end_lineno + 1)
                        if n in comments and not comments[n][0]]
            fields[item.target.id] = " ".join(above + trailing)
    return " ".join((ast.get_docstring(node) or "").split()), fields


def _comments_by_line(source: str) -> dict[int, tuple[bool, str]]:
    """line -> (whether the comment is the whole line, its text without ``#``)."""
    out = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            whole_line = not tok.line[: tok.start[1]].strip()
            out[tok.start[0]] = (whole_line, tok.string.lstrip("#").strip())
    return out


def _block_above(comments: dict[int, tuple[bool, str]], line: int) -> list[str]:
    block = []
    n = line - 1
    while n in comments and comments[n][0]:
        block.insert(0, comments[n][1])
        n -= 1
    return block


def _yaml_value(value) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text  # a bare scalar ends with "..."


def sections(source: str | None = None) -> list[Section]:
    """The sections of :class:`catlip.config.Config` in order, each with its keys; ``source`` defaults to
    config.py's text (tests pass a changed one)."""
    source = source if source is not None else Path(config_module.__file__).read_text()
    out = []
    for section in dataclasses.fields(config_module.Config):
        cls = section.default_factory
        doc, helps = field_comments(source, cls.__name__)
        defaults = dataclasses.asdict(cls())
        keys = tuple(Key(f"{section.name}.{f.name}", str(f.type), _yaml_value(defaults[f.name]), helps.get(f.name, ""))
                     for f in dataclasses.fields(cls))
        out.append(Section(section.name, doc, keys))
    return out


def undocumented(found: list[Section]) -> list[str]:
    """Sections and keys with no meaning to show."""
    return [s.name for s in found if not s.meaning] + [k.name for s in found for k in s.keys if not k.meaning]


def _checked(source: str | None = None) -> list[Section]:
    found = sections(source)
    missing = undocumented(found)
    if missing:
        raise CatlipError(f"configuration keys without a comment in config.py: {', '.join(missing)}")
    return found


def format_keys(source: str | None = None, width: int = 110) -> str:
    """Plain text for `catlip config keys`: one line per key (type, default), its meaning indented below."""
    lines = []
    for s in _checked(source):
        lines += [f"{s.name}: {s.meaning}"]
        for k in s.keys:
            lines.append(f"  {k.name} ({k.type}) = {k.default}")
            lines += textwrap.wrap(k.meaning, width, initial_indent="      ", subsequent_indent="      ")
        lines.append("")
    lines.append("deprecated: still read (with a warning line) from recipes, overrides and older runs")
    lines += [f"  {old} -> {new}" for old, new in config_module.MOVED_KEYS.items()]
    return "\n".join(lines).rstrip() + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(source: str | None = None) -> str:
    """The text of docs/config.md."""
    lines = ["# Configuration keys", "",
             "Generated from the dataclasses in `src/catlip/config.py` (their comments) by `catlip config keys "
             "--markdown > docs/config.md`; tests/unit/test_config_visible.py fails when this file differs, so edit "
             "the comments in config.py, not this page.", "",
             "Set a key in a recipe YAML (`section:` then `key: value`) or on the command line as "
             "`section.key=value`; `catlip pretrain --print-config [--config F] [KEY=VALUE ...]` prints the "
             "resolved configuration without training.", ""]
    for s in _checked(source):
        lines += [f"## {s.name}", "", s.meaning, "", "| key | type | default | meaning |", "|---|---|---|---|"]
        lines += [f"| `{k.name}` | `{_cell(k.type)}` | `{_cell(k.default)}` | {_cell(k.meaning)} |" for k in s.keys]
        lines.append("")
    lines += ["## Deprecated keys", "", "Still read from recipes, overrides and the config.yaml / checkpoints of older "
              "runs, as the key they moved to, with one warning line on stderr; setting both to different values is "
              "an error.", "", "| deprecated key | read as |", "|---|---|"]
    lines += [f"| `{old}` | `{new}` |" for old, new in config_module.MOVED_KEYS.items()]
    lines.append("")
    return "\n".join(lines)


def write_markdown(path: str | Path = DOCS_PATH) -> Path:
    path = Path(path)
    path.write_text(markdown())
    return path
