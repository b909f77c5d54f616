"""Writing thresholds into a config file without losing its comments or layout.

pyyaml cannot round-trip comments, so this is a careful line-based edit: replace an existing
value (keeping its comment) or add the key at the end of its block; the result is re-parsed and
loaded with ``load_config``, and the original put back if that fails.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import ConfigError, load_config
from gateway.routing.rows import CommandError, write_atomically

if TYPE_CHECKING:
    pass

#: The tenant of traffic rows without a ``"tenant"``; its threshold is the gateway-wide one.
ANY_TENANT = "*"

# --- calibrate: writing the config ------------------------------------------------------------


def threshold_key(tenant: str) -> str:
    return (
        "router.classifier.threshold"
        if tenant == ANY_TENANT
        else (f"tenants.{tenant}.routing_threshold")
    )


def threshold_path(tenant: str) -> list[str]:
    return (
        ["router", "classifier", "threshold"]
        if tenant == ANY_TENANT
        else (["tenants", tenant, "routing_threshold"])
    )


def write_thresholds(
    path: Path,
    thresholds: Mapping[str, float],
    *,
    note: str = "",
    load: Callable[[Path], object] = load_config,
) -> None:
    """Write each tenant's threshold into the YAML config at ``path``, keeping its comments and
    layout; tenant ``*`` sets ``router.classifier.threshold``. The written file must ``load``
    (``load_config``), else the original is put back and :class:`CommandError` raised."""
    import yaml

    try:
        original = path.read_bytes().decode("utf-8")
        text = original
    except OSError as exc:
        raise CommandError(f"{path}: cannot read: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise CommandError(f"{path}: not UTF-8 text") from exc
    for tenant, value in thresholds.items():
        text = set_yaml_value(
            text, threshold_path(tenant), _float(value), comment=note, source=str(path)
        )
    # the line edit is checked against a real parser before anything is written
    document = yaml.safe_load(text)
    for tenant, value in thresholds.items():
        node: Any = document
        for key in threshold_path(tenant):
            node = node.get(key) if isinstance(node, dict) else None
        if node != value:
            raise CommandError(
                f"{path}: could not place {threshold_key(tenant)} safely in this file's layout; "
                f"set it to {_float(value)} by hand (nothing was written)"
            )

    def put(content: str) -> None:  # newline="" below: CRLF files keep their CRLF
        write_atomically(path, lambda fh: fh.write(content))

    try:
        put(text)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        load(path)
    except ConfigError as exc:
        put(original)
        raise CommandError(
            f"the written config does not load, so {path} was restored: {exc}"
        ) from exc


def _float(value: float) -> str:
    return repr(float(value))


_KEY_LINE = re.compile(
    r"""^(?P<indent>[ ]*)"""
    r"""(?P<key>"(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s#"'{}\[\],&*!|>%@`-][^:#]*?|-[^\s:#][^:#]*?)"""
    r"""[ ]*:(?P<rest>(?:[ \t].*)?)$"""
)
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")


def _content(line: str) -> bool:
    stripped = line.strip()
    return bool(stripped) and not stripped.startswith("#")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _unquote(key: str) -> str:
    if key.startswith('"'):
        value = json.loads(key)
        return str(value)
    if key.startswith("'"):
        return key[1:-1].replace("''", "'")
    return key.strip()


def _split_comment(rest: str) -> tuple[str, str]:
    """``" 0.5  # note"`` -> ``("0.5", "# note")``; a ``#`` must follow whitespace to start a
    comment (quoted values are not expected where this is used)."""
    m = re.search(r"(^|[ \t])#", rest)
    if m is None:
        return rest.strip(), ""
    return rest[: m.start()].strip(), rest[m.start() :].strip()


def _key_text(key: str) -> str:
    return key if _PLAIN_KEY.fullmatch(key) else json.dumps(key)


def set_yaml_value(
    text: str, path: Sequence[str], value: str, *, comment: str = "", source: str = "<yaml>"
) -> str:
    """``text`` with the block-style mapping key ``path`` set to the scalar ``value``.

    Only the one line changes (its own comment kept, unless it is an earlier ``comment`` of
    ours), or, if the key is missing, lines are added at the end of the parent's block with the
    parent's indentation; every other byte stays. Flow-style parents (``{...}``), aliases and
    other layouts it cannot edit safely raise :class:`CommandError` naming the key.
    """
    lines = text.splitlines(keepends=True)
    eol = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    start, end, parent_indent = 0, len(lines), -1
    dotted = ".".join(path)
    for depth, key in enumerate(path):
        last = depth == len(path) - 1
        where = ".".join(path[: depth + 1])
        children = [i for i in range(start, end) if _content(lines[i])]
        child_indent = _indent(lines[children[0]]) if children else parent_indent + 2
        found = None
        for i in children:
            line = lines[i].rstrip("\r\n")
            if _indent(line) != child_indent or line.lstrip().startswith(("---", "...", "%")):
                continue
            m = _KEY_LINE.match(line)
            if m and _unquote(m.group("key")) == key:
                found = (i, m)
                break
        if found is None:
            return _insert(
                lines, start, end, parent_indent, child_indent, path[depth:], value, comment, eol
            )
        i, m = found
        own_value, own_comment = _split_comment(m.group("rest"))
        block_end = _block_end(lines, i + 1, end, child_indent)
        has_children = any(_content(lines[j]) for j in range(i + 1, block_end))
        if last:
            if has_children or own_value.startswith(("{", "[", "&", "*", "|", ">")):
                raise CommandError(
                    f"{source}: {where} is not a plain value; set it to {value} by hand"
                )
            note = (
                comment
                if (not own_comment or own_comment.startswith("# gateway calibrate"))
                else ""
            )
            tail = f"  # {note}" if note else (f"  {own_comment}" if own_comment else "")
            ending = lines[i][len(lines[i].rstrip("\r\n")) :]
            lines[i] = f"{m.group('indent')}{m.group('key')}: {value}{tail}{ending}"
            return "".join(lines)
        if own_value.startswith("{"):
            raise CommandError(
                f"{source}: {where} is written in flow style ({{...}}); write it as an indented "
                f"block, or add {dotted} = {value} by hand"
            )
        if own_value in ("", "null", "~") or re.fullmatch(r"&\S+", own_value):
            if own_value in ("null", "~"):  # an empty mapping spelt out: becomes a block
                ending = lines[i][len(lines[i].rstrip("\r\n")) :]
                tail = f"  {own_comment}" if own_comment else ""
                lines[i] = f"{m.group('indent')}{m.group('key')}:{tail}{ending}"
            start, end, parent_indent = i + 1, block_end, child_indent
            continue
        raise CommandError(
            f"{source}: {where} is not a mapping ({own_value!r}); cannot set {dotted}"
        )
    raise CommandError(f"{source}: empty key path")  # pragma: no cover - path is never empty


def _block_end(lines: Sequence[str], start: int, end: int, indent: int) -> int:
    """The index after a key's block: the next content line indented at most ``indent``."""
    for j in range(start, end):
        if _content(lines[j]) and _indent(lines[j]) <= indent:
            return j
    return end


def _insert(
    lines: list[str],
    start: int,
    end: int,
    parent_indent: int,
    child_indent: int,
    keys: Sequence[str],
    value: str,
    comment: str,
    eol: str,
) -> str:
    # after the block's last line that belongs to it: blank lines and comments indented like
    # the next key (or less) before the block's end describe what follows, not this block
    at = end
    while at > start and (
        not lines[at - 1].strip()
        or (not _content(lines[at - 1]) and _indent(lines[at - 1]) <= parent_indent)
    ):
        at -= 1
    if at > 0 and not lines[at - 1].endswith(("\n", "\r")):
        lines[at - 1] += eol
    step = child_indent - parent_indent if parent_indent >= 0 else 2
    new = []
    indent = child_indent
    for n, key in enumerate(keys):
        if n == len(keys) - 1:
            tail = f"  # {comment}" if comment else ""
            new.append(f"{' ' * indent}{_key_text(key)}: {value}{tail}{eol}")
        else:
            new.append(f"{' ' * indent}{_key_text(key)}:{eol}")
            indent += max(step, 2)
    lines[at:at] = new
    return "".join(lines)

