"""CSS inlined into the HTML templates' *source*, once, when a template is loaded.

Email clients ignore most `<style>` rules, so every element needs its style in a `style="..."`
attribute. Running css-inline on each rendered email costs more than rendering it; the styles
depend only on the markup, which the template source already holds. So each `.html.j2` source is
inlined once at load, with its Jinja tags protected from the HTML parser:

- a tag in text becomes an HTML comment placeholder (comments stay where they are, even inside a
  `<table>`, where the parser would move text);
- a tag inside a quoted attribute value, an HTML comment or a `<title>` becomes a bare word;
- a tag anywhere else in an HTML tag (`<td {% if x %}class="a"{% endif %}>`, `href={{ url }}`)
  or inside `<style>` / `<script>` cannot be protected: the template is rejected with its line
  (write `class="{{ 'a' if x }}"`, quote the attribute, or render with `inline_css="render"`).

After inlining, the placeholders must come back exactly once each and in their original order;
anything else (the parser moved or dropped a tag) rejects the template.

A template holding `<html>` (the base layout) is inlined as a document with its own `<style>`;
every other `.html.j2` (a child's blocks, partials, content blocks) as a fragment with the CSS of
the layout's `<style>` (`layout.html.j2`, as resolved by the loaders). This gives the same HTML as
inlining the rendered email when the stylesheet's selectors match within one template: classes
and element names, no descendant combinators across templates, no `:nth-child` on looped markup.
`tests/test_render.py` checks the equality for every shipped template.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser

import css_inline

LAYOUT = "layout.html.j2"
_JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)
_MARK = re.compile(r"\x00(\d+)\x00")
_PREFIX = "jinjaslot"
_PLACEHOLDER = re.compile(rf"<!--{_PREFIX}(\d+)x-->|{_PREFIX}(\d+)x")
_STYLE = re.compile(r"<style[^>]*>(.*?)</style>", re.S | re.I)
_TAG_NAME = re.compile(r"/?([A-Za-z][A-Za-z0-9-]*)")
_RAW_TEXT = frozenset(("title", "textarea"))
_NO_JINJA = frozenset(("style", "script"))


class InlineError(ValueError):
    """A template whose CSS cannot be inlined at load: `line` (1-based) and `reason`."""

    def __init__(self, line: int | None, reason: str) -> None:
        self.line, self.reason = line, reason
        super().__init__(f"line {line}: {reason}" if line else reason)


def inliner() -> css_inline.CSSInliner:
    """The one css-inline configuration, at load and at render: `@media` rules stay in a `<style>`
    (mobile layout), `<link>` stylesheets are dropped and never fetched."""
    return css_inline.CSSInliner(
        keep_at_rules=True, load_remote_stylesheets=False, keep_link_tags=False
    )


@dataclass(frozen=True)
class InlinedSource:
    """A template source with its CSS inlined, and where its Jinja tags were in the original."""

    source: str
    lines: tuple[int, ...]  # 1-based line of each Jinja tag in `source`
    original_lines: tuple[int, ...]  # ... and in the file

    def original_line(self, line: int) -> int:
        """The line of the file that `line` of `source` comes from (errors point at the file)."""
        i = bisect.bisect_right(self.lines, line) - 1
        if i < 0:
            return line
        return self.original_lines[i] + (line - self.lines[i])


def shared_css(layout_source: str) -> str:
    """The CSS of the layout's `<style>` elements, for the fragments of the other templates."""
    return "\n".join(_STYLE.findall(layout_source))


def inline_source(
    source: str, css: str, engine: css_inline.CSSInliner | None = None
) -> InlinedSource:
    """`source` (a Jinja HTML template) with its CSS inlined; see the module docstring.

    Raises:
        InlineError: a Jinja tag the HTML parser would mangle, or one it moved.
    """
    if _PREFIX in source:
        raise InlineError(None, f"the text {_PREFIX!r} is reserved for CSS inlining")
    constructs: list[str] = []
    starts: list[int] = []

    def mark(match: re.Match[str]) -> str:
        constructs.append(match.group())
        starts.append(match.start())
        return f"\x00{len(constructs) - 1}\x00"

    marked = _JINJA.sub(mark, source)

    def line_of(index: int) -> int:
        return source.count("\n", 0, starts[index]) + 1

    in_text: list[bool] = []
    protected = _protect(marked, line_of, in_text)
    engine = engine or inliner()
    if re.search(r"<html[\s>]", protected, re.I):
        inlined = engine.inline(protected)
    else:
        inlined = engine.inline_fragment(protected, css)
    pieces: list[str] = []
    order: list[int] = []
    lines: list[tuple[int, int]] = []
    last, line = 0, 1
    for match in _PLACEHOLDER.finditer(inlined):
        text = inlined[last : match.start()]
        pieces.append(text)
        line += text.count("\n")
        index = int(match.group(1) or match.group(2))
        if index >= len(constructs):
            break
        order.append(index)
        lines.append((line, line_of(index)))
        pieces.append(constructs[index])
        line += constructs[index].count("\n")
        last = match.end()
    pieces.append(inlined[last:])
    moved = _first_moved(order, in_text)
    if moved is not None:
        raise InlineError(
            line_of(moved) if moved < len(constructs) else None,
            "the HTML parser moved or dropped a Jinja tag while inlining CSS (is the markup "
            "around it valid HTML?)",
        )
    lines.sort()
    return InlinedSource("".join(pieces), tuple(t for t, _ in lines), tuple(o for _, o in lines))


def _first_moved(order: list[int], in_text: list[bool]) -> int | None:
    """The first Jinja tag the parser dropped, doubled or moved, or None.

    Tags in text must keep their order. Tags in attribute values may be reordered with their
    attributes (the parser does not keep attribute order), but not leave their element, that is
    the text tags around them.
    """
    if sorted(order) != list(range(len(in_text))):
        missing = sorted(set(range(len(in_text))) - set(order))
        return missing[0] if missing else len(in_text)
    text_before, last = [], -1
    for index, is_text in enumerate(in_text):
        text_before.append(last)
        last = index if is_text else last
    previous_text = -1
    for index in order:
        if in_text[index]:
            if index < previous_text:
                return index
            previous_text = index
        else:
            if text_before[index] != previous_text:
                return index
    return None


def _protect(marked: str, line_of: Callable[[int], int], in_text: list[bool]) -> str:
    """`marked` with each marker replaced by a placeholder that fits where it stands.

    Appends to `in_text`, for each marker, whether it stands in text (a comment placeholder).
    """
    out: list[str] = []
    state, quote, tag, raw_end = "text", "", "", ""
    i, n = 0, len(marked)
    while i < n:
        char = marked[i]
        if char == "\x00":
            end = marked.index("\x00", i + 1)
            index = int(marked[i + 1 : end])
            i = end + 1
            in_text.append(state == "text")
            if state == "text":
                out.append(f"<!--{_PREFIX}{index}x-->")
                continue
            if state == "tag" and not quote:
                raise InlineError(
                    line_of(index),
                    "a Jinja tag inside an HTML tag must be inside a quoted attribute value "
                    '(write class="{{ \'a\' if x }}", not {% if x %}class="a"{% endif %})',
                )
            if state == "raw" and tag in _NO_JINJA:
                raise InlineError(line_of(index), f"no Jinja tags inside <{tag}>")
            out.append(f"{_PREFIX}{index}x")
            continue
        if state == "text":
            if marked.startswith("<!--", i):
                state = "comment"
                out.append("<!--")
                i += 4
                continue
            name = _TAG_NAME.match(marked, i + 1) if char == "<" else None
            if name:
                state, quote = "tag", ""
                tag = "" if marked[i + 1] == "/" else name.group(1).lower()
        elif state == "comment":
            if marked.startswith("-->", i):
                state = "text"
                out.append("-->")
                i += 3
                continue
        elif state == "tag":
            if quote and char == quote:
                quote = ""
            elif not quote and char in "\"'":
                quote = char
            elif not quote and char == ">":
                if tag in _RAW_TEXT or tag in _NO_JINJA:
                    state, raw_end = "raw", f"</{tag}"
                else:
                    state = "text"
        elif state == "raw" and marked[i : i + len(raw_end)].lower() == raw_end:
            state = "tag"
            tag = ""
        out.append(char)
        i += 1
    return "".join(out)


class _Canonical(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tokens: list[tuple[str, ...]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        pairs = sorted((k, _style(v) if k == "style" else (v or "")) for k, v in attrs)
        self.tokens.append(("start", tag, *(f"{k}={v}" for k, v in pairs)))

    handle_startendtag = handle_starttag

    def handle_endtag(self, tag: str) -> None:
        self.tokens.append(("end", tag))

    def handle_data(self, data: str) -> None:
        if self.tokens and self.tokens[-1][0] == "text":
            data = self.tokens.pop()[1] + data
        self.tokens.append(("text", data))

    def handle_comment(self, data: str) -> None:
        self.tokens.append(("comment", data))

    def handle_decl(self, decl: str) -> None:
        self.tokens.append(("decl", decl.lower()))


def _style(value: str | None) -> str:
    return ";".join(d.strip() for d in (value or "").split(";") if d.strip())


def canonical_html(html: str) -> list[tuple[str, ...]]:
    """`html` as tokens that ignore how it is spelled: attribute order, entities, `<br/>`."""
    parser = _Canonical()
    parser.feed(html)
    parser.close()
    return parser.tokens
