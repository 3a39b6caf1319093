"""The Jinja2 sandbox marketers' templates run in, its filters, and its one error type.

Templates are data written by marketers: they may not run code or read files. So:

- `ImmutableSandboxedEnvironment`: no attribute starting with `_` (`__class__`, `__globals__`,
  `_private`), no mutation of lists and dicts, no unsafe callables; the first unsafe access
  raises `TemplateError`, in lenient mode too (it never renders as empty).
- Templates come only from the loaders: the user folders first (a file there replaces the shipped
  one of the same name), then the shipped `templates/` folder. No absolute paths, no `..`.
- No `lipsum`; `range` is capped by the sandbox and `*` / `**` are capped here, so a template
  cannot allocate gigabytes.
- Autoescape by name: `*.html.j2` (and `*.html`) escaped, `*.txt.j2` and `*.subject.j2` not.
- `strict=True` (previews): `StrictUndefined`, a missing variable is an error naming it.
  `strict=False` (production): a missing value, or any attribute of it, renders as empty; `None`
  renders as empty in both modes.

Filters: `money(value, currency="EUR")`, `utm(url, campaign, content, source, medium)`,
`track(url, slot, position)`, which is `utm` with the `campaign` and `template` of the context
(`content` = "template/slot/position"), and `numbered(items, start=1)`, the items with their
position: `{% for position, product in products | numbered %}` (cheaper than `loop.index`, for
which Jinja makes a loop object and steps it in Python).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote, unquote_plus, urlsplit, urlunsplit

from jinja2 import (
    BaseLoader,
    ChainableUndefined,
    ChoiceLoader,
    Environment,
    FileSystemLoader,
    StrictUndefined,
    TemplateNotFound,
    TemplatesNotFound,
    TemplateSyntaxError,
    Undefined,
    pass_context,
    select_autoescape,
)
from jinja2.compiler import CodeGenerator, Frame
from jinja2.nodes import Expr
from jinja2.runtime import Context, LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import missing
from markupsafe import Markup, escape

from personalizer.render.inlining import (
    LAYOUT,
    InlinedSource,
    InlineError,
    inline_source,
    shared_css,
)

MAX_REPEAT = 100_000  # longest string or list a template may build with `*`
MAX_EXPONENT = 64
CURRENCY_SYMBOLS = {"EUR": "€", "USD": "$", "GBP": "£", "JPY": "¥"}
UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_content")
_LOOP_ATTRIBUTES = frozenset(
    ("index", "index0", "revindex", "revindex0", "first", "last", "length", "depth", "depth0")
)


class TemplateError(ValueError):
    """A template that cannot be loaded or rendered: which (`template`), where (`line`) and why."""

    def __init__(self, template: str | None, line: int | None, reason: str) -> None:
        self.template, self.line, self.reason = template, line, reason
        where = template or "<template>"
        if line is not None:
            where = f"{where}, line {line}"
        super().__init__(f"{where}: {reason}")


# ----------------------------------------------------------------------------------- filters
def _text(value: Any) -> str:
    """A filter argument as text: lenient undefined is "", strict undefined raises naming it."""
    if value is None:
        return ""
    return str(value)


def money(value: Any, currency: Any = "EUR") -> str:
    """A price with its currency: `€1,299.00`, `$5.00`, `12.50 CHF`; empty when missing."""
    if isinstance(value, Undefined) or value is None or value == "":
        return _text(value)
    amount = float(value)
    code = _text(currency).upper() or "EUR"
    symbol = CURRENCY_SYMBOLS.get(code)
    digits = 0 if code == "JPY" else 2
    number = f"{amount:,.{digits}f}"
    return f"{symbol}{number}" if symbol else f"{number} {code}"


def utm(
    url: Any,
    campaign: Any,
    content: Any,
    source: Any = "personalizer",
    medium: Any = "email",
) -> str:
    """`url` with utm_source, utm_medium, utm_campaign and utm_content set.

    Existing utm_* parameters of those four names are replaced; every other parameter, their
    order and encoding, and the fragment are kept. An empty value leaves its parameter alone. A
    URL that is not http(s) (`javascript:`, `data:`) becomes "#"; a missing URL, "".
    """
    text = _text(url).strip()
    if not text:
        return ""
    return _utm(text, _text(campaign), _text(content), _text(source), _text(medium))


@lru_cache(maxsize=65_536)  # the same product links recur across a whole batch
def _utm(url: str, campaign: str, content: str, source: str, medium: str) -> str:
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        return "#"
    values = dict(zip(UTM_KEYS, (source, medium, campaign, content), strict=True))
    values = {k: v for k, v in values.items() if v}
    kept = [
        item
        for item in parts.query.split("&")
        if item and unquote_plus(item.split("=", 1)[0]) not in values
    ]
    added = [f"{k}={quote(v, safe='/')}" for k, v in values.items()]
    return urlunsplit(parts._replace(query="&".join(kept + added)))


@pass_context
def track(context: Context, url: Any, slot: Any, position: Any = 1) -> str:
    """`utm` with the context's campaign and a content tag "template/slot/position"."""
    if isinstance(url, Undefined) or not url:
        return _text(url)
    content = f"{_text(_lookup(context, 'template'))}/{_text(slot)}/{_text(position)}"
    campaign = _text(_lookup(context, "campaign"))
    return _utm(str(url).strip(), campaign, content, "personalizer", "email")


def numbered(items: Any, start: int = 1) -> list[tuple[int, Any]]:
    """`(position, item)` of each item, from `start`: Python's `enumerate`."""
    return list(enumerate(items, start))


def _lookup(context: Context, name: str) -> Any:
    """`context.get(name)`: a variable set in the template, else passed to it, else None. Read
    here from the two dicts, not through the three Python calls of `Context.get`."""
    local = context.vars
    value = local[name] if name in local else context.parent.get(name)
    return None if value is missing else value


# ------------------------------------------------------------------------------- environment
try:  # MarkupSafe 3: the C escaper alone, without making a `Markup` (a Python `__new__`)
    from markupsafe import _escape_inner as _escape_str
except ImportError:  # pragma: no cover - MarkupSafe 2

    def _escape_str(s: str, /) -> str:
        return str(escape(s))


def _html_output(value: Any) -> str:
    """`escape(_finalize(value))` as text, for `{{ value }}` in an autoescaped template.

    The output of a template is only joined (blocks, includes, `Template.render`): a plain `str`
    does, and `escape` makes a `Markup` per value with a Python `__new__` (8 µs an email).
    """
    if type(value) is str:
        return _escape_str(value)
    if type(value) is Markup:  # already safe: `escape` would return an equal copy
        return value
    if value is None:
        return ""
    return escape(value)


def _text_output(value: Any) -> str:
    """`str(_finalize(value))`, for `{{ value }}` in a template that is not escaped."""
    return "" if value is None else str(value)


class _CodeGenerator(CodeGenerator):
    """Jinja's compiler, writing each `{{ value }}` as one call of `_html_output` or
    `_text_output` instead of three (`escape(environment.finalize(value))`, and `Markup`).
    Templates whose autoescape is switched at run time (`{% autoescape %}` with a variable) keep
    Jinja's code; so does an environment with another `finalize`. As `NativeCodeGenerator` does.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fast_output: list[bool] = []

    def _output_child_pre(self, node: Expr, frame: Frame, finalize: Any) -> None:
        fast = not frame.eval_ctx.volatile and self.environment.finalize is _finalize
        self._fast_output.append(fast)
        if not fast:
            super()._output_child_pre(node, frame, finalize)
        elif frame.eval_ctx.autoescape:
            self.write("environment.html_output(")
        else:
            self.write("environment.text_output(")

    def _output_child_post(self, node: Expr, frame: Frame, finalize: Any) -> None:
        if self._fast_output.pop():
            self.write(")")
        else:
            super()._output_child_post(node, frame, finalize)


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset(("*", "**"))
    code_generator_class = _CodeGenerator
    html_output = staticmethod(_html_output)
    text_output = staticmethod(_text_output)

    def make_globals(self, d: Any = None) -> Any:
        # A plain dict, not Jinja's ChainMap over `self.globals`: every context made for a
        # template takes `set()` of its globals, and iterating a ChainMap costs µs, several
        # times an email. Our globals are set in `create_environment` and never change after.
        return {**self.globals, **(d or {})}

    def _load_template(self, name: str, globals: Any) -> Any:
        # An `{% include %}` looks its template up on every render, through Jinja's locked LRU
        # cache: a dict instead (`auto_reload` is off, a loaded template never changes).
        if globals:
            return super()._load_template(name, globals)
        memo: dict[str, Any] = self.__dict__.setdefault("_memo", {})
        template = memo.get(name)
        if template is None:
            template = memo[name] = super()._load_template(name, globals)
        return template

    def getattr(self, obj: Any, attribute: str) -> Any:
        # `product.title` on a plain dict: its key first. Jinja tries the attribute first, which
        # for a dict fails with an exception on every access, a fifth of the render time.
        # A dict's values are the context's data, so this opens nothing up.
        if type(obj) is dict:
            try:
                return obj[attribute]
            except KeyError:
                pass
        elif type(obj) is LoopContext and attribute in _LOOP_ATTRIBUTES:
            return getattr(obj, attribute)
        elif isinstance(obj, Undefined) and attribute.startswith("_"):
            return self.unsafe_undefined(obj, attribute)  # `missing.__globals__` raises too
        return super().getattr(obj, attribute)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # Jinja returns an undefined that fails only when used, and a lenient undefined never
        # is: raise at the first unsafe access instead, in both modes, naming it.
        raise SecurityError(
            f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe"
        )

    def call_binop(self, context: Context, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**" and isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
            raise SecurityError(f"exponent {right} is too large (at most {MAX_EXPONENT})")
        if operator_ == "*":
            for seq, count in ((left, right), (right, left)):
                if (
                    isinstance(seq, str | list | tuple)
                    and isinstance(count, int)
                    and len(seq) * count > MAX_REPEAT
                ):
                    raise SecurityError(f"result too long (at most {MAX_REPEAT} items)")
            return operator.mul(left, right)
        return super().call_binop(context, operator_, left, right)


class TemplateLoader(BaseLoader):
    """The user folders, then the shipped templates; optionally inlines CSS into HTML sources.

    Remembers, for error messages, the template name of each file and how inlining moved lines.
    """

    def __init__(self, template_dirs: Sequence[str | Path] = (), inline_css: bool = False) -> None:
        shipped = Path(str(resources.files("personalizer.render").joinpath("templates")))
        folders = [str(Path(d)) for d in template_dirs]
        self.base = ChoiceLoader([FileSystemLoader(folders), FileSystemLoader(str(shipped))])
        self.inline_css = inline_css
        self.names: dict[str, str] = {}
        self.inlined: dict[str, InlinedSource] = {}
        self._css: str | None = None

    def get_source(self, environment: Environment, template: str) -> Any:
        source, filename, uptodate = self.base.get_source(environment, template)
        if filename is not None:
            self.names[filename] = template
        if self.inline_css and template.endswith(".html.j2"):
            environment.parse(source, template, filename)  # syntax errors name the file's lines
            try:
                inlined = inline_source(source, self.css(environment))
            except InlineError as exc:
                raise TemplateSyntaxError(
                    f"cannot inline CSS at load: {exc.reason}", exc.line or 1, template, filename
                ) from exc
            if filename is not None:
                self.inlined[filename] = inlined
            source = inlined.source
        return source, filename, uptodate

    def css(self, environment: Environment) -> str:
        """The stylesheet of the layout, applied to every HTML template but the layout."""
        if self._css is None:
            try:
                layout, _, _ = self.base.get_source(environment, LAYOUT)
            except TemplateNotFound:
                layout = ""
            self._css = shared_css(layout)
        return self._css

    def list_templates(self) -> list[str]:
        return self.base.list_templates()

    def locate(self, filename: str, line: int | None) -> tuple[str, int | None]:
        """Template name and file line of a position in a loaded (maybe inlined) source."""
        name = self.names.get(filename, filename)
        inlined = self.inlined.get(filename)
        if inlined is not None and line is not None:
            line = inlined.original_line(line)
        return name, line


def create_environment(
    template_dirs: Sequence[str | Path] | str | Path | None = None,
    *,
    strict: bool = False,
    inline_css: bool = False,
) -> Environment:
    """The sandboxed environment of the email templates.

    Args:
        template_dirs: folders of templates that replace shipped ones of the same name.
        strict: a missing variable is an error (previews), not an empty value (production).
        inline_css: inline the layout's CSS into each `.html.j2` source at load.
    """
    if isinstance(template_dirs, str | Path):
        template_dirs = [template_dirs]
    env = _Sandbox(
        loader=TemplateLoader(template_dirs or (), inline_css=inline_css),
        # asked by every context made (each template, include and block of an email): by name,
        # from a cache, not by lowering and matching the name each time
        autoescape=lru_cache(maxsize=1024)(
            select_autoescape(
                enabled_extensions=("html.j2", "html"), default_for_string=True, default=False
            )
        ),
        undefined=StrictUndefined if strict else ChainableUndefined,
        finalize=_finalize,
        auto_reload=False,  # no stat() per render; a Renderer is rebuilt to pick up edits
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.pop("lipsum", None)
    env.filters.update(money=money, utm=utm, track=track, numbered=numbered)
    return env


def _finalize(value: Any) -> Any:
    return "" if value is None else value


# ------------------------------------------------------------------------------------ errors
def template_error(
    exc: BaseException, env: Environment | None = None, template: str | None = None
) -> TemplateError:
    """`exc`, raised while loading or rendering `template`, as a `TemplateError`.

    The template and line are those of the innermost template frame (an include's, a block's),
    in the file as written, before any CSS inlining.
    """
    if isinstance(exc, TemplateError):
        return exc
    loader = env.loader if env is not None else None
    name, line = template, None
    if isinstance(exc, TemplateSyntaxError):
        name, line = exc.name or template, exc.lineno
        if exc.filename and isinstance(loader, TemplateLoader):
            name = loader.names.get(exc.filename, name)
        return TemplateError(name, line, f"syntax error: {exc.message}")
    frame = _innermost_template_frame(exc.__traceback__)
    if frame is not None:
        filename, line = frame
        if filename != "<template>" and isinstance(loader, TemplateLoader):
            name, line = loader.locate(filename, line)
    if isinstance(exc, TemplatesNotFound):
        reason = f"template not found: {', '.join(map(str, exc.templates))}"
    elif isinstance(exc, TemplateNotFound):
        reason = f"template not found: {exc.name}"
    elif isinstance(exc, SecurityError):
        reason = f"not allowed: {exc}"
    else:
        reason = str(exc) or type(exc).__name__
        if type(exc).__module__ != "jinja2.exceptions":
            reason = f"{type(exc).__name__}: {reason}"
    return TemplateError(name, line, reason)


def _innermost_template_frame(tb: TracebackType | None) -> tuple[str, int] | None:
    """File and line of the last frame Jinja rewrote to point into a template."""
    found = None
    while tb is not None:
        if "__jinja_exception__" in tb.tb_frame.f_globals:
            found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def render_template(env: Environment, name: str, context: Mapping[str, Any]) -> str:
    """`name` rendered with `context`; every failure is a `TemplateError`."""
    try:
        return env.get_template(name).render(context)
    except Exception as exc:
        raise template_error(exc, env, name) from exc


def render_string(
    env: Environment, source: str, context: Mapping[str, Any], name: str = "<string>"
) -> str:
    """`source` (template text, such as a draft from the preview page) rendered with `context`;
    every failure is a `TemplateError` naming `name`. Autoescaped like an HTML template."""
    try:
        return env.from_string(source).render(context)
    except Exception as exc:
        raise template_error(exc, env, name) from exc
