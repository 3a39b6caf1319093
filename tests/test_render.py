"""Email rendering: the sandbox, escaping, strictness, CSS inlined at load, UTM links, templates."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from personalizer.render import (
    EmailContext,
    ProductCard,
    Renderer,
    TemplateError,
    create_environment,
    inlining,
    money,
    render_string,
    sample_context,
    sample_products,
    utm,
)
from personalizer.render.inlining import canonical_html
from personalizer.schema import Product

TEMPLATES = [
    "browse_reminder",
    "cart_reminder",
    "post_purchase",
    "vip_offer",
    "welcome",
    "win_back",
]
HREF = re.compile(r'<a [^>]*href="([^"]*)"')


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer()


def minimal() -> dict:
    return {"customer": {"customer_id": "C9"}, "unsubscribe_url": "https://x.example/u?c=C9"}


# ------------------------------------------------------------------------------------ sandbox
ATTACKS = [  # (template, what the error says)
    ("{{ ''.__class__.__mro__ }}", "attribute '__class__' of 'str'"),
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "attribute '__class__' of 'str'"),
    ("{{ cycler.__init__.__globals__ }}", "attribute '__init__' of 'type'"),
    ("{{ self.__init__.__globals__ }}", "attribute '__init__' of 'TemplateReference'"),
    ("{% include '/etc/passwd' %}", "template not found: /etc/passwd"),
    ("{% include '../../../../../../etc/passwd' %}", "template not found: ../../../"),
    ("{{ lipsum.__globals__ }}", "__globals__"),
    ("{{ thing._private }}", "attribute '_private' of 'Thing'"),
    ("{{ '{0.__class__}'.format(1) }}", "attribute '__class__' of 'int'"),
    ("{{ 'x' * 10000000 }}", "result too long"),
    ("{{ range(10 ** 9) | list }}", "Range too big"),
    ("{% if ''.__class__ %}yes{% endif %}", "attribute '__class__' of 'str'"),
]


class Thing:
    public = "visible"
    _private = "secret-value"


@pytest.mark.parametrize("strict", [False, True])
@pytest.mark.parametrize(("source", "reason"), ATTACKS)
def test_sandbox_refuses_with_a_readable_error(source: str, reason: str, strict: bool) -> None:
    env = create_environment(strict=strict)
    with pytest.raises(TemplateError) as caught:
        render_string(env, source, {"thing": Thing()}, name="draft.html")
    message = str(caught.value)
    assert message.startswith("draft.html, line 1: "), message
    assert reason in caught.value.reason
    for leak in ("<class", "secret-value", "root:", "subprocess", "built-in", "Traceback"):
        assert leak not in message
    assert isinstance(caught.value, ValueError)


def test_sandbox_messages_say_why() -> None:
    env = create_environment()
    with pytest.raises(TemplateError, match=r"not allowed: access to attribute '__class__'"):
        render_string(env, "{{ ''.__class__ }}", {})
    with pytest.raises(TemplateError, match="template not found: /etc/passwd"):
        render_string(env, "{% include '/etc/passwd' %}", {})
    with pytest.raises(TemplateError, match="'_private' of 'Thing' object is unsafe"):
        render_string(env, "{{ thing._private }}", {"thing": Thing()})
    assert render_string(env, "{{ thing.public }}", {"thing": Thing()}) == "visible"


def test_undefined_globals_render_nothing_leniently_and_fail_strictly() -> None:
    assert render_string(create_environment(), "[{{ config }}]", {}) == "[]"
    with pytest.raises(TemplateError, match="'config' is undefined"):
        render_string(create_environment(strict=True), "{{ config }}", {})


def test_include_outside_the_template_folders_fails_in_a_file(tmp_path: Path) -> None:
    (tmp_path / "welcome.txt.j2").write_text("Hi\n\n{% include '/etc/passwd' %}\n", "utf-8")
    with pytest.raises(TemplateError) as caught:
        Renderer([tmp_path]).render("welcome", sample_context("welcome"))
    assert (caught.value.template, caught.value.line) == ("welcome.txt.j2", 3)
    assert caught.value.reason == "template not found: /etc/passwd"


def test_template_names_cannot_leave_the_template_folders(renderer: Renderer) -> None:
    with pytest.raises(TemplateError, match="template not found"):
        renderer.render("../../../etc/passwd", sample_context())


def test_any_render_failure_is_a_template_error(tmp_path: Path) -> None:
    (tmp_path / "welcome.subject.j2").write_text("{{ 'abc' | money }}", "utf-8")
    with pytest.raises(TemplateError, match=r"welcome.subject.j2, line 1: ValueError"):
        Renderer([tmp_path]).render("welcome", sample_context())
    (tmp_path / "welcome.subject.j2").write_text("Hello\n{% if %}", "utf-8")
    with pytest.raises(TemplateError, match=r"welcome.subject.j2, line 2: syntax error"):
        Renderer([tmp_path]).render("welcome", sample_context())


# ----------------------------------------------------------------------------------- escaping
def test_html_is_escaped_and_text_is_not(renderer: Renderer) -> None:
    evil = "<script>alert(1)</script>"
    products = [p.model_copy(update={"title": evil}) for p in sample_context().products]
    email = renderer.render("welcome", sample_context(products=products))
    assert "<script>" not in email.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in email.html
    assert 'alt="&lt;script&gt;alert(1)&lt;/script&gt;"' in email.html
    assert f"- {evil}, €49.00" in email.text


class Safe:
    def __html__(self) -> str:
        return "<u>safe</u>"


OUTPUTS = """{{ a }}|{{ m }}|{{ n }}|{{ i }}|{{ f }}|{{ nowhere }}|{{ nowhere.deeper }}|{{ d.x }}|{{ s }}
{{ a ~ m }}|{{ m ~ a }}|{{ a | upper }}|{{ m | safe }}|{{ a | e }}
{% set block %}<b>{{ a }}</b>{{ m }}{% endset %}{{ block }}|{{ block | length }}
{% macro tag(v) %}<i>{{ v }}</i>{% endmacro %}{{ tag(a) }}|{{ tag(m) }}
{% filter upper %}{{ a }}{{ m }}{% endfilter %}
{% autoescape flag %}{{ a }}{{ m }}{% endautoescape %}|{% autoescape false %}{{ a }}{% endautoescape %}
{% for x in [a, m, n, i] %}{{ x }}{{ loop.index }}{% endfor %}
"""


@pytest.mark.parametrize("flag", [True, False])
def test_output_is_jinjas_own_escaping(tmp_path: Path, flag: bool) -> None:
    # `{{ value }}` is written as one call of our own (environment.py, `_CodeGenerator`): the
    # same text as Jinja's `escape(finalize(value))`, escaped or not, in every construct
    from jinja2.compiler import CodeGenerator
    from markupsafe import Markup

    for suffix in ("html.j2", "txt.j2"):
        (tmp_path / f"t.{suffix}").write_text(OUTPUTS, encoding="utf-8")
    values = {
        "a": '<a href="x">&\'',
        "m": Markup("<b>ok</b>"),
        "n": None,
        "i": 3,
        "f": 1.5,
        "d": {"x": "<y>"},
        "s": Safe(),
        "flag": flag,
    }
    ours = create_environment([tmp_path])
    jinjas = create_environment([tmp_path])
    jinjas.code_generator_class = CodeGenerator
    for name in ("t.html.j2", "t.txt.j2"):
        got = ours.get_template(name).render(values)
        assert got == jinjas.get_template(name).render(values)
        assert "environment.html_output(" in ours.compile(OUTPUTS, raw=True)
    assert "&lt;a href=&#34;x&#34;&gt;&amp;&#39;|<b>ok</b>||3|1.5|||&lt;y&gt;|<u>safe</u>" in (
        ours.get_template("t.html.j2").render(values)
    )


def test_subject_is_one_line(renderer: Renderer) -> None:
    context = sample_context().model_dump()
    context["customer"]["first_name"] = "Ada\r\nBcc: everyone@example.com"
    email = renderer.render("welcome", context)
    assert "\n" not in email.subject
    assert "\r" not in email.subject
    assert email.subject == "Welcome to Northwind Outfitters, Ada Bcc: everyone@example.com"


# --------------------------------------------------------------------------------- strictness
def test_strict_mode_names_the_missing_variable() -> None:
    context = {**minimal(), "shop": {"name": "S", "url": "https://s.example"}}
    with pytest.raises(TemplateError) as caught:
        Renderer(strict=True).render("browse_reminder", context)
    assert caught.value.template == "browse_reminder.subject.j2"
    assert "'category' is undefined" in caught.value.reason
    email = Renderer().render("browse_reminder", context)
    assert email.subject == "Still looking?"


@pytest.mark.parametrize("template", TEMPLATES)
def test_shipped_templates_are_strict_clean(template: str) -> None:
    email = Renderer(strict=True).render(template, sample_context(template))
    assert email.subject
    assert email.html
    assert email.text


@pytest.mark.parametrize("template", TEMPLATES)
def test_lenient_mode_renders_a_bare_context(renderer: Renderer, template: str) -> None:
    email = renderer.render(template, minimal())
    for part in (email.subject, email.html, email.text):
        assert "None" not in part
        assert "Undefined" not in part
    assert 'href="https://x.example/u?c=C9"' in email.html


def test_error_lines_are_those_of_the_file_despite_inlining(tmp_path: Path) -> None:
    shipped = Path(inlining.__file__).parent / "templates" / "layout.html.j2"
    lines = shipped.read_text("utf-8").splitlines()
    footer = next(i for i, line in enumerate(lines) if 'class="footer-link"' in line)
    lines.insert(footer + 1, "<p>{{ oops.missing }}</p>")
    (tmp_path / "layout.html.j2").write_text("\n".join(lines) + "\n", "utf-8")
    (tmp_path / "welcome.html.j2").write_text(
        '{% extends "layout.html.j2" %}\n{% block content %}\n<p class="x">\n'
        "{{ customer.nickname }}</p>\n{% endblock %}\n",
        "utf-8",
    )
    strict = Renderer([tmp_path], strict=True)
    with pytest.raises(TemplateError) as caught:
        strict.render("welcome", sample_context())
    assert (caught.value.template, caught.value.line) == ("welcome.html.j2", 4)
    assert "nickname" in caught.value.reason
    (tmp_path / "welcome.html.j2").write_text(
        '{% extends "layout.html.j2" %}\n{% block content %}{% endblock %}\n', "utf-8"
    )
    with pytest.raises(TemplateError) as caught:
        Renderer([tmp_path], strict=True).render("welcome", sample_context())
    # the <style> block above is gone from the inlined source, the line is the file's
    assert (caught.value.template, caught.value.line) == ("layout.html.j2", footer + 2)
    assert "'oops' is undefined" in caught.value.reason


# ------------------------------------------------------------------------ shipped templates
@pytest.mark.parametrize("template", TEMPLATES)
def test_shipped_template_renders_a_complete_email(renderer: Renderer, template: str) -> None:
    context = sample_context(template)
    email = renderer.render(template, context)

    # CSS inlined on the key elements; the only <style> left holds the @media rules
    for element in (
        r"<body",
        r"<h1",
        r'<a class="button"',
        r'<td class="footer"',
        r'<a class="footer-link"',
        r'<table class="container"',
    ):
        assert re.search(element + r'[^>]*style="[^"]+"', email.html), element
    assert re.search(r'class="container"[^>]*style="[^"]*max-width: 600px', email.html)
    styles = re.findall(r"<style>(.*?)</style>", email.html, re.S)
    assert [s.strip()[:6] for s in styles] == ["@media"]
    for image in re.findall(r"<img [^>]*>", email.html):
        assert "height: auto" in image
        assert "max-width" in image

    # every link to the shop or a product carries the campaign and a content tag
    links = HREF.findall(email.html)
    shop_links = [h for h in links if h != context.unsubscribe_url.replace("&", "&amp;")]
    assert len(shop_links) >= 3
    for href in shop_links:
        query = parse_qs(urlsplit(href.replace("&amp;", "&")).query)
        assert query["utm_campaign"] == [context.campaign], href
        assert query["utm_source"] == ["personalizer"]
        assert query["utm_medium"] == ["email"]
        assert re.fullmatch(rf"{template}/[a-z_]+/\d+", query["utm_content"][0]), href
    linked = " ".join(shop_links)
    for product in context.products[1:] if template == "browse_reminder" else context.products:
        assert f"/p/{product.product_id}?" in linked

    # unsubscribe link always present, in both parts
    assert f'href="{context.unsubscribe_url.replace("&", "&amp;")}"' in email.html
    assert context.unsubscribe_url in email.text

    # plain text: no tags, links tracked too
    assert not re.search(r"<[a-zA-Z/!]", email.text)
    for url in re.findall(r"https://shop\.example\.com\S*", email.text):
        if url == context.unsubscribe_url:
            continue
        assert f"utm_campaign={context.campaign}" in url
    assert "\n\n\n" not in email.text

    # why a product was chosen is in the markup for debugging, never in the visible text
    assert 'data-strategy="als"' in email.html
    visible = " ".join(t[1] for t in canonical_html(email.html) if t[0] == "text")
    for product in context.products:
        assert product.reason not in visible
        assert product.reason not in email.text


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("segments", [["new_subscriber"], ["vip", "cart_abandoner"], ["vip"], []])
def test_inlining_at_load_equals_inlining_after_render(
    renderer: Renderer, template: str, segments: list[str]
) -> None:
    context = sample_context(template, segments=segments, viewed_categories=["fitness_apparel"])
    assert renderer.inlining_difference(template, context) is None
    empty = sample_context(template, segments=segments, products=[], discount_code=None)
    assert renderer.inlining_difference(template, empty) is None


def test_inlining_check_catches_markup_the_parser_rewrites(tmp_path: Path) -> None:
    (tmp_path / "welcome.html.j2").write_text(
        '{% extends "layout.html.j2" %}{% block content %}<table class="products">\n'
        "{% for p in products %}<tr><td>{{ p.title }}</td></tr>{% endfor %}\n"
        "</table>{% endblock %}",
        "utf-8",
    )
    # without an explicit <tbody>, the parser opens one inside the loop: once per row
    difference = Renderer([tmp_path]).inlining_difference("welcome", sample_context())
    assert difference is not None
    assert "tbody" in difference


def test_jinja_inside_a_tag_is_refused_at_load_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "welcome.html.j2").write_text(
        '{% extends "layout.html.j2" %}\n{% block content %}\n'
        '<p {% if customer.first_name %}class="x"{% endif %}>Hi</p>\n{% endblock %}\n',
        "utf-8",
    )
    with pytest.raises(TemplateError) as caught:
        Renderer([tmp_path]).render("welcome", sample_context())
    assert (caught.value.template, caught.value.line) == ("welcome.html.j2", 3)
    assert "inside a quoted attribute value" in caught.value.reason
    email = Renderer([tmp_path], inline_css="render").render("welcome", sample_context())
    assert re.search(r'<p class="x" style="[^"]+">Hi</p>', email.html)
    (tmp_path / "welcome.html.j2").write_text(
        '{% extends "layout.html.j2" %}\n{% block content %}\n<style>\n'
        "p { color: {{ color }}; }\n</style>\n{% endblock %}\n",
        "utf-8",
    )
    with pytest.raises(
        TemplateError, match=r"welcome.html.j2, line 4: .*no Jinja tags inside <style>"
    ):
        Renderer([tmp_path]).render("welcome", sample_context())


def test_rendering_runs_no_css_inliner(monkeypatch: pytest.MonkeyPatch) -> None:
    renderer = Renderer()
    for template in TEMPLATES:  # loading the templates inlines their CSS, once
        renderer.render(template, sample_context(template))

    class NoInliner:
        def __getattr__(self, name: str) -> None:
            raise AssertionError(f"css_inline.{name} used while rendering")

    monkeypatch.setattr(inlining, "css_inline", NoInliner())
    for template in TEMPLATES:
        assert 'style="' in renderer.render(template, sample_context(template)).html


def test_user_templates_replace_shipped_ones_by_name(tmp_path: Path) -> None:
    (tmp_path / "welcome.subject.j2").write_text("Hello {{ customer.first_name }}!", "utf-8")
    email = Renderer([tmp_path]).render("welcome", sample_context())
    assert email.subject == "Hello Ada!"
    assert "Welcome, Ada!" in email.text  # the other parts are still the shipped ones


def test_a_card_reads_the_variables_its_grid_sets(tmp_path: Path) -> None:
    # cards are kept by the context values they read: one the grid sets must count, not the
    # email's value of the same name
    partials = tmp_path / "partials"
    partials.mkdir()
    grid = (
        "{% set campaign = 'grid_' ~ slot %}{% for p in items %}{{ p | card(slot, 1) }}{% endfor %}"
    )
    (partials / "products.txt.j2").write_text(grid, "utf-8")
    renderer = Renderer([tmp_path])
    for _ in range(2):  # the second time from the cache
        text = renderer.render("welcome", sample_context()).text
        assert "utm_campaign=grid_products&" in text
        assert "utm_campaign=welcome_sample&" in text  # the button: the email's campaign


def test_unsubscribe_link_is_required(tmp_path: Path, renderer: Renderer) -> None:
    context = sample_context().model_dump()
    context["unsubscribe_url"] = ""
    with pytest.raises(TemplateError, match="no unsubscribe_url"):
        renderer.render("welcome", context)
    (tmp_path / "layout.txt.j2").write_text("{% block content %}{% endblock %}\n", "utf-8")
    with pytest.raises(TemplateError, match="unsubscribe link is missing"):
        Renderer([tmp_path]).render("welcome", sample_context())


def test_browse_reminder_features_the_most_viewed_product(renderer: Renderer) -> None:
    context = sample_context("browse_reminder", category="running shoes")
    email = renderer.render("browse_reminder", context)
    top = context.products[0]
    assert email.subject == "Based on your interest in running shoes"
    assert "Based on your interest in running shoes…" in email.html
    assert f'src="{top.image_url}"' in email.html
    button = re.search(r'<a class="button" href="([^"]*)"', email.html)
    assert button is not None
    assert f"/p/{top.product_id}?" in button.group(1)
    assert "browse_reminder/button/1" in button.group(1)
    assert ">Shop Now</a>" in email.html


def test_cart_reminder_shows_the_personal_code(renderer: Renderer) -> None:
    email = renderer.render("cart_reminder", sample_context("cart_reminder"))
    assert '<span class="code"' in email.html
    assert ">CART-9XH4</span>" in email.html
    assert "Take 10% off your cart with your personal code: CART-9XH4" in email.text
    without = renderer.render("cart_reminder", sample_context("cart_reminder", discount_code=None))
    assert "code" not in without.text.lower()


@pytest.mark.parametrize(
    ("stage", "offer"),
    [(30, "10% off"), (60, "15% off"), (90, "20% off your next order, and free shipping")],
)
def test_win_back_incentive_grows_with_the_stage(
    renderer: Renderer, stage: int, offer: str
) -> None:
    email = renderer.render("win_back", sample_context("win_back", winback_stage=stage))
    assert offer in email.text
    assert offer in email.html
    assert email.subject.startswith(offer.split(" your")[0].split(",")[0])
    assert ("free shipping" in email.text) == (stage == 90)


# --------------------------------------------------------------------------------- filters
def test_utm_keeps_the_rest_of_the_url() -> None:
    url = "https://shop.example.com/p/1?size=M&q=a%20b&utm_campaign=old&utm_term=kw#reviews"
    tracked = utm(url, "spring", "welcome/products/2")
    assert tracked == (
        "https://shop.example.com/p/1?size=M&q=a%20b&utm_term=kw&utm_source=personalizer"
        "&utm_medium=email&utm_campaign=spring&utm_content=welcome/products/2#reviews"
    )
    assert utm("https://s.example", "c", "x", source="news", medium="mail") == (
        "https://s.example?utm_source=news&utm_medium=mail&utm_campaign=c&utm_content=x"
    )
    assert utm("https://s.example/?a=1", "big sale", "t/s/1").endswith(
        "utm_campaign=big%20sale&utm_content=t/s/1"
    )


def test_utm_refuses_non_web_links_and_ignores_missing_ones() -> None:
    assert utm("javascript:alert(1)", "c", "x") == "#"
    assert utm("data:text/html,hi", "c", "x") == "#"
    assert utm(None, "c", "x") == ""
    assert utm("", "c", "x") == ""


def test_numbered_gives_each_item_its_position() -> None:
    env = create_environment()
    source = "{% for i, x in items | numbered %}{{ i }}{{ x }} {% endfor %}"
    assert render_string(env, source, {"items": ["a", "b", "c"]}) == "1a 2b 3c "
    assert render_string(env, "{{ items | numbered(0) | list }}", {"items": "ab"}) == (
        "[(0, &#39;a&#39;), (1, &#39;b&#39;)]"
    )


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_product_grid_closes_every_row(renderer: Renderer, count: int) -> None:
    email = renderer.render("welcome", sample_context(products=sample_products(count)))
    grid = email.html.split('<table class="products"')[1].split("</table>")[0]
    assert grid.count('<td class="product"') == count
    assert grid.count("<tr>") == grid.count("</tr>") == (count + 1) // 2
    for position in range(1, count + 1):
        assert f"utm_content=welcome/products/{position}" in grid
        assert f"utm_content=welcome/products/{position}" in email.text


def test_money() -> None:
    assert money(1299) == "€1,299.00"
    assert money(5, "USD") == "$5.00"
    assert money("12.5", "chf") == "12.50 CHF"
    assert money(None) == ""
    with pytest.raises(ValueError, match="could not convert"):
        money("abc")


# --------------------------------------------------------------------------------- context
def test_context_schema_builds_from_catalogue_products() -> None:
    product = Product(product_id="P9", title=None, price=10.0, url="https://s.example/p/9")
    card = ProductCard.from_product(product, strategy="als", reason="similar customers")
    assert (card.title, card.price, card.strategy) == ("P9", 10.0, "als")
    context = EmailContext(
        customer={"customer_id": "C1"},
        unsubscribe_url="https://s.example/u",
        products=[card],
        shop={"name": "S", "url": "https://s.example"},
    )
    email = Renderer().render("post_purchase", context)
    assert "utm_campaign=post_purchase" in email.text  # campaign defaults to the template
    with pytest.raises(ValueError, match="unsubscribe_url"):
        EmailContext(customer={"customer_id": "C1"}, unsubscribe_url="")


def test_cached_blocks_never_carry_one_customers_values_to_another() -> None:
    renderer = Renderer()
    codes = ["CART-AAAA1111", "CART-BBBB2222", "CART-AAAA1111"]
    for i, code in enumerate(codes):
        context = sample_context(
            "cart_reminder",
            discount_code=code,
            customer={"customer_id": f"C{i}", "first_name": f"Name{i}"},
            unsubscribe_url=f"https://shop.example.com/unsubscribe?c=C{i}",
        )
        email = renderer.render("cart_reminder", context)
        others = set(codes) - {code}
        assert code in email.html
        assert code in email.text
        assert not any(other in email.html or other in email.text for other in others)
    assert renderer._block_cache  # blocks were cached, and reused for the repeated code


def test_only_the_slots_an_email_shows_are_rendered(tmp_path: Path) -> None:
    # A hero block that cannot render: an email without `blocks.hero` does not render it...
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks" / "hero_default.html.j2").write_text("{{ (shop.name | length) // 0 }}")
    context = sample_context("vip_offer", segments=[])
    email = Renderer(tmp_path).render("vip_offer", context)
    assert email.blocks["hero"].name == "hero_default"  # still chosen, and reported
    assert "Shop Now" in email.html
    # ...one that shows it fails, naming the block...
    with pytest.raises(TemplateError, match="hero_default"):
        Renderer(tmp_path).render("welcome", sample_context("welcome", segments=[]))
    # ...and one that reads `blocks` as a whole renders every slot.
    for suffix, body in (
        (".html.j2", "{{ blocks['hero'] }}{% for s in blocks %}{{ s }}{% endfor %}"),
        (".txt.j2", "{{ blocks.offer }}"),
    ):
        (tmp_path / f"loop{suffix}").write_text(body + " {{ unsubscribe_url }}")
    (tmp_path / "loop.subject.j2").write_text("Hi")
    with pytest.raises(TemplateError, match="hero_default"):
        Renderer(tmp_path).render("loop", sample_context("welcome", segments=[]))
