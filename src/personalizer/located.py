"""Files users write (segments, block rules): YAML read with line numbers, errors that point at them."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Sequence
from typing import Any

import yaml


class LocatedError(ValueError):
    """An invalid file the user wrote: where (`source`, `line`, 1-based) and why (`reason`)."""

    def __init__(self, source: str, line: int | None, reason: str) -> None:
        self.source, self.line, self.reason = source, line, reason
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {reason}")


def load_yaml(text: str, source: str, error: type[LocatedError]) -> tuple[Any, yaml.Node | None]:
    """The data of YAML text and its node tree (for `node_line`); a syntax error raises `error`."""
    try:
        return yaml.safe_load(text), yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise error(source, line, f"YAML syntax error: {reason}") from exc


def node_line(
    root: yaml.Node | None, loc: Sequence[str | int], *, key_last: bool = False
) -> int | None:
    """1-based line of the deepest node on the path `loc` (keys and list positions).

    With `key_last`, a mapping key ending the path points at the key's own line (an unknown key,
    a key with a wrong value) rather than at its value's.
    """
    node = root
    if node is None:
        return None
    for depth, part in enumerate(loc, 1):
        child = None
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == part), None)
            if pair is not None:
                child = pair[0] if key_last and depth == len(loc) else pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            child = node.value[part] if 0 <= part < len(node.value) else None
        if child is None:
            break
        node = child
    return node.start_mark.line + 1


def known_name(name: str, known: Collection[str], what: str) -> str:
    """`name` when it is one of `known`; else a ValueError naming it, with the closest known names."""
    if name not in known:
        close = difflib.get_close_matches(name, sorted(known), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown {what} {name!r}{hint}")
    return name
