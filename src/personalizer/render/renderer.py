"""Rendering one email: subject, HTML (CSS inlined) and plain text, with its content blocks.

An email named `<name>` is three templates (shipped ones in `templates/`, a user folder's of the
same name replace them):

- `<name>.subject.j2`: the subject, plain text; whitespace collapses to one line (no header
  injection through a newline);
- `<name>.html.j2`: the HTML part, autoescaped, normally `{% extends "layout.html.j2" %}` (the
  shared layout: `<style>`, header, footer with the unsubscribe link);
- `<name>.txt.j2`: the plain-text part, not escaped, normally extending `layout.txt.j2`.

Content blocks: `select_blocks` picks a block per slot from the rules; each is rendered
(`blocks/<block>.html.j2`, and `.txt.j2` when there is one) with the email's context plus `slot`
and `params`, and the email reads them as `{{ blocks.hero }}`. Every slot of the rules is in
`blocks`, empty when no rule matched.

CSS: by default (`inline_css="load"`) the layout's stylesheet is inlined into each HTML template's
source once, when it is loaded (`inlining.py`), so a render costs no css-inline call;
`inline_css="render"` inlines each rendered email instead (slower, for templates the load-time
inliner rejects).

Every email must carry the context's `unsubscribe_url`, in both parts: rendering fails otherwise.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

from jinja2 import Environment, Template, meta, nodes
from jinja2.runtime import Context
from jinja2.utils import missing, pass_context
from markupsafe import Markup, escape

from personalizer.render.blocks import (
    BLOCKS_FOLDER,
    BlockRules,
    SelectedBlock,
    available_blocks,
    default_block_rules,
    select_blocks,
)
from personalizer.render.context import EmailContext
from personalizer.render.environment import TemplateError, create_environment, template_error
from personalizer.render.inlining import canonical_html, inliner

PARTS = ("subject", "html", "text")
BLOCK_CACHE = 10_000  # rendered blocks kept, by block and the context values it reads
CARD_CACHE = 50_000  # rendered product cards kept, by the values each reads
_CARD_HTML = "partials/product_card.html.j2"
_CARD_TEXT = "partials/product_card.txt.j2"
_SUFFIX = {"subject": ".subject.j2", "html": ".html.j2", "text": ".txt.j2"}
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*){2,}")
_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_NO_MARKUP = Markup("")


class _CardReads(NamedTuple):
    """What a product card template reads (`Renderer._card_inputs`)."""

    name: str  # the card template
    names: tuple[str, ...]  # context variables, sorted
    in_context: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # their values
    fields: Callable[[Any], Any] | None  # the product's fields read; None: all of it


@dataclass(frozen=True)
class RenderedEmail:
    """One rendered email; `blocks` says which block filled each slot, and why."""

    subject: str
    html: str
    text: str
    blocks: Mapping[str, SelectedBlock] = field(default_factory=dict)


class Renderer:
    """Renders the email templates in the sandbox (`environment.py`).

    Args:
        template_dirs: folders whose templates replace shipped ones of the same name.
        strict: previews: a missing variable is an error naming it. Production (False): empty.
        rules: the block rules; by default `default_blocks.yaml`, checked against the block
            templates of `template_dirs` and the shipped ones.
        inline_css: "load" (inline the CSS into template sources once) or "render".
    """

    def __init__(
        self,
        template_dirs: Sequence[str | Path] | str | Path | None = None,
        strict: bool = False,
        rules: BlockRules | None = None,
        inline_css: Literal["load", "render"] = "load",
    ) -> None:
        if isinstance(template_dirs, str | Path):
            template_dirs = [template_dirs]
        self.template_dirs = [Path(d) for d in template_dirs or ()]
        self.strict = strict
        self.inline_css = inline_css
        self.env: Environment = create_environment(
            self.template_dirs, strict=strict, inline_css=inline_css == "load"
        )
        self.rules = rules if rules is not None else default_block_rules(self.blocks())
        self._inliner = inliner() if inline_css == "render" else None
        self._templates: dict[str, Template | None] = {}
        self._names: list[str] | None = None
        self._block_names: dict[str, tuple[str, ...]] = {}
        self._block_cache: dict[tuple[str, ...], tuple[Markup, str]] = {}
        self._slots_used: dict[str, frozenset[str] | None] = {}
        self._card_of: dict[str | None, _CardReads] = {}  # by the template calling `card`
        self._card_cache: dict[tuple[Any, ...], str] = {}
        self.env.filters["card"] = self._product_card

    def templates(self) -> list[str]:
        """Names of the emails that have all three parts (`<name>.subject/html/txt.j2`).

        Listed once (a walk of the template folders): a renderer serves the templates it found
        when it was made; make a new one to pick up new files.
        """
        if self._names is None:
            self._names = self._list_templates()
        return list(self._names)

    def _list_templates(self) -> list[str]:
        names = set(self.env.list_templates())
        return sorted(
            n.removesuffix(".html.j2")
            for n in names
            if "/" not in n
            and n.endswith(".html.j2")
            and all(n.removesuffix(".html.j2") + s in names for s in _SUFFIX.values())
            and n != "layout.html.j2"
        )

    def blocks(self) -> frozenset[str]:
        """Names of the block templates, shipped and from `template_dirs`."""
        return available_blocks(self.template_dirs)

    def check(self, template: str) -> None:
        """Load and compile the three parts of `template` (at startup, to fail early).

        Raises:
            TemplateError: a part is missing or invalid.
        """
        for part in PARTS:
            self._template(template + _SUFFIX[part], required=True)

    def render(
        self,
        template: str,
        context: Mapping[str, Any] | EmailContext,
        blocks: Mapping[str, SelectedBlock] | None = None,
    ) -> RenderedEmail:
        """Render the email `template` for one customer.

        Args:
            template: the email's name, such as "welcome".
            context: an `EmailContext` or a mapping with its keys; `campaign` defaults to
                `template`.
            blocks: the block of each slot, when already chosen; by default `select_blocks`.

        Raises:
            TemplateError: naming the template, the line and the reason; never another error.
        """
        values = dict(self.env.globals)
        try:
            values.update(context.model_dump() if isinstance(context, EmailContext) else context)
        except (TypeError, ValueError) as exc:
            raise TemplateError(template, None, f"the context is not a mapping: {exc}") from exc
        values["template"] = template
        values["campaign"] = values.get("campaign") or template
        unsubscribe = values.get("unsubscribe_url")
        if not unsubscribe or not isinstance(unsubscribe, str):
            raise TemplateError(template, None, "the context has no unsubscribe_url")
        try:
            chosen = dict(select_blocks(self.rules, values) if blocks is None else blocks)
        except Exception as exc:
            raise TemplateError(template, None, f"cannot select blocks: {exc}") from exc
        used = self._used_slots(template)
        shown = chosen if used is None else {s: b for s, b in chosen.items() if s in used}
        html_blocks, text_blocks = self._render_blocks(shown, values)
        subject = " ".join(self._render(template + ".subject.j2", values).split())
        values["subject"] = subject
        values["blocks"] = html_blocks
        html = self._render(template + ".html.j2", values)
        if self._inliner is not None:
            try:
                html = self._inliner.inline(html)
            except Exception as exc:
                raise TemplateError(template + ".html.j2", None, f"CSS inlining: {exc}") from exc
        values["blocks"] = text_blocks
        text = self._render(template + ".txt.j2", values)
        # the regex tries every space (9 µs an email); a text without a tab has no "\t\n" and
        # `in` finds a lone character at once, a pair by reading the whole text
        if " \n" in text or ("\t" in text and "\t\n" in text):
            text = _TRAILING_SPACE.sub("\n", text)
        text = _BLANK_LINES.sub("\n\n", text).strip() + "\n"
        # the link is in the footer: searched from the end (`in` reads the whole email first)
        if html.rfind(escape(unsubscribe)) < 0 or text.rfind(unsubscribe) < 0:
            raise TemplateError(template, None, "the unsubscribe link is missing from the email")
        return RenderedEmail(subject, html, text, chosen)

    def inlining_difference(
        self, template: str, context: Mapping[str, Any] | EmailContext
    ) -> str | None:
        """None when inlining CSS at load gives the same HTML as inlining the rendered email.

        "The same" is token by token (`inlining.canonical_html`): tags, attributes, inline
        styles, text and comments, whatever the attribute order or entity spelling. Otherwise,
        the first difference. For checking templates against a sample context (tests, previews).
        """
        reference = Renderer(self.template_dirs, self.strict, self.rules, inline_css="render")
        expected = canonical_html(reference.render(template, context).html)
        got = canonical_html(self.render(template, context).html)
        for i, (a, b) in enumerate(zip(got, expected, strict=False)):
            if a != b:
                return f"token {i}: at load {a!r}, after render {b!r}"
        if len(got) != len(expected):
            return f"{len(got)} tokens at load, {len(expected)} after render"
        return None

    def _render_blocks(
        self, chosen: Mapping[str, SelectedBlock], values: dict[str, Any]
    ) -> tuple[dict[str, Markup], dict[str, str]]:
        html = dict.fromkeys(self.rules.slots, _NO_MARKUP)
        text = dict.fromkeys(self.rules.slots, "")
        for slot, block in chosen.items():
            path = f"{BLOCKS_FOLDER}/{block.name}"
            # A block reads a few context values (often none that vary by customer): its output
            # is kept by those values, and most emails of a campaign reuse it.
            key = (path, slot, repr(block.params), *self._block_inputs(path, values))
            cached = self._block_cache.get(key)
            if cached is None:
                scope = {**values, "slot": slot, "params": block.params}
                # The env autoescapes .html.j2: this is HTML we rendered, safe to mark as such.
                part_html = Markup(self._render(path + ".html.j2", scope))
                part_text = ""
                if self._template(path + ".txt.j2", required=False) is not None:
                    part_text = self._render(path + ".txt.j2", scope).strip()
                cached = (part_html, part_text)
                if len(self._block_cache) < BLOCK_CACHE:
                    self._block_cache[key] = cached
            html[slot], text[slot] = cached
        return html, text

    def _used_slots(self, template: str) -> frozenset[str] | None:
        """The slots an email's parts read as `blocks.<slot>` (or `blocks["slot"]`), through the
        templates they extend and include; None when `blocks` is used any other way (so every
        slot is rendered). A block chosen for a slot the email does not show is not rendered."""
        if template in self._slots_used:
            return self._slots_used[template]
        used: set[str] | None = set()
        seen: set[str] = set()
        todo = [template + _SUFFIX["html"], template + _SUFFIX["text"]]
        while todo and used is not None:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            try:
                source = self.env.loader.get_source(self.env, name)[0]  # type: ignore[union-attr]
                tree = self.env.parse(source)
            except Exception:  # a missing or broken part fails in the render, with its error
                used = None
                break
            for ref in meta.find_referenced_templates(tree):
                if ref is None:  # a template named at run time: anything may be read
                    used = None
                    break
                todo.append(ref)
            if used is not None:
                used = _slot_reads(tree, used)
        found = None if used is None else frozenset(used)
        self._slots_used[template] = found
        return found

    def _block_inputs(self, path: str, values: Mapping[str, Any]) -> tuple[str, ...]:
        """The values of the context variables a block's two templates read, as text."""
        names = self._block_names.get(path)
        if names is None:
            found: set[str] = set()
            for suffix in (".html.j2", ".txt.j2"):
                try:
                    source = self.env.loader.get_source(self.env, path + suffix)[0]  # type: ignore[union-attr]
                except Exception:  # no text part: nothing read
                    continue
                found |= meta.find_undeclared_variables(self.env.parse(source))
            # `track` reads the campaign and the template from the context itself
            names = tuple(sorted((found | {"campaign", "template"}) - {"slot", "params"}))
            self._block_names[path] = names
        return tuple(repr(values.get(name)) for name in names)

    @pass_context
    def _product_card(self, context: Context, product: Any, slot: Any, position: Any) -> str:
        """`partials/product_card.(html|txt).j2` for one product, the part of the calling template.

        A card is kept by what its template reads: the product's fields named in it, the
        context variables it uses, and its slot and position. A product block differs from one
        customer to the next, its cards mostly do not (the same best sellers, the same slot).
        """
        reads = self._card_of.get(context.name)
        if reads is None:
            name = _CARD_TEXT if str(context.name).endswith(".txt.j2") else _CARD_HTML
            reads = self._card_of[context.name] = self._card_inputs(name)
        name, names, in_context, fields = reads
        # `context.resolve_or_missing` of each name, in one C call when none is set locally
        local = context.vars
        try:
            values = in_context(context.parent)
        except KeyError:
            values = None
        if values is None or (local and not local.keys().isdisjoint(names)):
            values = tuple(map(context.resolve_or_missing, names))
        try:
            product_key: Any = fields(product) if fields is not None else repr(product)
        except (KeyError, TypeError):  # not a dict holding every field read: all of it counts
            product_key = repr(product)
        key: Any = (name, product_key, slot, position, values)
        try:
            cached = self._card_cache.get(key)
        except TypeError:  # an unhashable value (a list, a mapping): keep it by its text
            key = repr(key)
            cached = self._card_cache.get(key)
        if cached is None:
            scope = {**self.env.globals, "product": product, "slot": slot, "position": position}
            scope.update((n, v) for n, v in zip(names, values, strict=True) if v is not missing)
            text = self._render(name, scope).strip("\n")
            cached = text if name == _CARD_TEXT else Markup(text)
            if len(self._card_cache) >= CARD_CACHE:
                self._card_cache.clear()
            self._card_cache[key] = cached
        return cached

    def _card_inputs(self, name: str) -> _CardReads:
        """What the card template `name` reads: the context variables (and a getter of them from
        a mapping), and a getter of the product fields it names (None: it uses `product`
        otherwise than by `product.field`, so all of it counts)."""
        source = self.env.loader.get_source(self.env, name)[0]  # type: ignore[union-attr]
        tree = self.env.parse(source)
        names = meta.find_undeclared_variables(tree) - {"product", "slot", "position"}
        # `track` reads the campaign and the template from the context itself
        names |= {"campaign", "template"}
        uses = sum(1 for n in tree.find_all(nodes.Name) if n.name == "product" and n.ctx == "load")
        reads = [
            n.attr
            for n in tree.find_all(nodes.Getattr)
            if isinstance(n.node, nodes.Name) and n.node.name == "product"
        ]
        # two names at least, so the getters always return a tuple
        fields = sorted(set(reads) | {"product_id"})
        getter = operator.itemgetter(*fields) if uses == len(reads) else None
        ordered = tuple(sorted(names))
        return _CardReads(name, ordered, operator.itemgetter(*ordered), getter)

    def _template(self, name: str, required: bool = True) -> Template | None:
        if name not in self._templates:
            try:
                self._templates[name] = self.env.get_template(name)
            except Exception as exc:
                error = template_error(exc, self.env, name)
                if required or not error.reason.startswith("template not found: " + name):
                    raise error from exc
                self._templates[name] = None
        return self._templates[name]

    def _render(self, name: str, values: dict[str, Any]) -> str:
        """`name` rendered with `values`, which hold the environment's globals already.

        The context shares `values` instead of copying it, as `Template.render` would, nine
        times an email (Jinja never writes to the shared dict).
        """
        template = self._template(name)
        assert template is not None
        try:
            return "".join(template.root_render_func(template.new_context(values, shared=True)))
        except Exception:
            try:
                self.env.handle_exception()  # re-raises with the template's lines in the traceback
            except Exception as exc:
                raise template_error(exc, self.env, name) from exc
            raise  # unreachable: handle_exception always raises


def _slot_reads(tree: nodes.Template, used: set[str]) -> set[str] | None:
    """`used` plus the slots `tree` reads from `blocks`; None if it uses `blocks` otherwise."""
    reads = 0
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        assert isinstance(node, nodes.Getattr | nodes.Getitem)
        inner = node.node
        if not (isinstance(inner, nodes.Name) and inner.name == "blocks"):
            continue
        if isinstance(node, nodes.Getattr):
            used.add(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            used.add(node.arg.value)
        else:
            return None
        reads += 1
    names = sum(1 for n in tree.find_all(nodes.Name) if n.name == "blocks" and n.ctx == "load")
    return used if names == reads else None
