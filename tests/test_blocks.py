"""Content block rules: first match wins per slot, readable reasons, conflicts and load errors."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from personalizer.render import (
    BlockRuleError,
    Renderer,
    available_blocks,
    default_block_rules,
    load_block_rules,
    parse_block_rules,
    sample_context,
    select_blocks,
)

BLOCKS = {"vip_offer", "onboarding", "cart_reminder", "activewear_discount", "hero_default"}


def rules(text: str, blocks: set[str] | None = None):
    return parse_block_rules(textwrap.dedent(text), "test.yaml", blocks or BLOCKS)


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line of dedented `text` containing `needle`."""
    lines = textwrap.dedent(text).splitlines()
    return next(i for i, line in enumerate(lines, 1) if needle in line)


HERO = """\
rules:
  - slot: hero
    block: cart_reminder
    when: {segment: cart_abandoner}
    params: {percent: 10}
  - slot: hero
    block: vip_offer
    when: {segment: vip}
  - slot: hero
    block: onboarding
    when: {any_segment: [new_subscriber, one_time_buyer], not_segment: dormant}
  - slot: hero
    block: hero_default
"""


# ---------------------------------------------------------------------------------- selection
def test_first_matching_rule_of_a_slot_wins_in_file_order() -> None:
    loaded = rules(HERO)
    both = select_blocks(loaded, {"segments": ["vip", "cart_abandoner"]})
    assert both["hero"].name == "cart_reminder"  # rule 1 is above the vip rule
    assert both["hero"].rule_index == 1
    assert both["hero"].params == {"percent": 10}
    assert select_blocks(loaded, {"segments": ["vip"]})["hero"].name == "vip_offer"
    assert select_blocks(loaded, {"segments": []})["hero"].name == "hero_default"

    # the same two rules the other way round: now the vip rule wins
    vip_first = rules(
        """\
        rules:
          - {slot: hero, block: vip_offer, when: {segment: vip}}
          - {slot: hero, block: cart_reminder, when: {segment: cart_abandoner}}
        """
    )
    chosen = select_blocks(vip_first, {"segments": ["vip", "cart_abandoner"]})["hero"]
    assert (chosen.name, chosen.rule_index) == ("vip_offer", 1)


def test_reason_names_the_rule_its_line_and_its_conditions() -> None:
    chosen = select_blocks(rules(HERO), {"segments": ["vip"]})["hero"]
    assert chosen.reason == f"rule 2 (line {line_of(HERO, 'block: vip_offer') - 1}): segment vip"
    fallback = select_blocks(rules(HERO), {})["hero"]
    assert fallback.reason == f"rule 4 (line {line_of(HERO, 'hero_default') - 1}): always"


def test_each_condition_kind() -> None:
    loaded = rules(HERO)
    pick = lambda segments: select_blocks(loaded, {"segments": segments})["hero"].name  # noqa: E731
    assert pick(["one_time_buyer"]) == "onboarding"  # any_segment
    assert pick(["new_subscriber"]) == "onboarding"
    assert pick(["new_subscriber", "dormant"]) == "hero_default"  # not_segment
    combined = rules(
        """\
        rules:
          - {slot: offer, block: activewear_discount, when: {viewed_category: fitness_apparel, all_segments: [vip, repeat_buyer]}}
          - {slot: offer, block: hero_default, when: {always: true}}
        """
    )
    offer = lambda ctx: select_blocks(combined, ctx)["offer"].name  # noqa: E731
    everything = {"segments": ["vip", "repeat_buyer"], "viewed_categories": ["fitness_apparel"]}
    assert offer(everything) == "activewear_discount"
    assert offer({**everything, "segments": ["vip"]}) == "hero_default"  # all_segments: both
    assert offer({**everything, "viewed_categories": ["shoes"]}) == "hero_default"
    assert select_blocks(combined, everything)["offer"].reason.endswith(
        "all_segments [vip, repeat_buyer] and viewed_category fitness_apparel"
    )


def test_slot_without_a_matching_rule_is_absent() -> None:
    loaded = rules("rules:\n  - {slot: hero, block: vip_offer, when: {segment: vip}}\n")
    assert select_blocks(loaded, {"segments": ["new_subscriber"]}) == {}
    assert loaded.slots == ("hero",)


def test_default_rules_follow_the_brief() -> None:
    loaded = default_block_rules()
    assert loaded.slots == ("hero", "offer")
    assert not [c for c in loaded.conflicts if c.startswith("unreachable")]
    pick = lambda **ctx: {s: b.name for s, b in select_blocks(loaded, ctx).items()}  # noqa: E731
    assert pick(segments=["vip"]) == {"hero": "vip_offer", "offer": "offer_default"}
    assert pick(segments=["new_subscriber"])["hero"] == "onboarding"
    cart = select_blocks(loaded, {"segments": ["cart_abandoner"]})["hero"]
    assert (cart.name, cart.params["percent"]) == ("cart_reminder", 10)
    assert pick(viewed_categories=["fitness_apparel"])["offer"] == "activewear_discount"
    assert pick()["hero"] == "hero_default"


# ---------------------------------------------------------------------------------- conflicts
def test_identical_conditions_are_reported() -> None:
    text = """\
    rules:
      - {slot: hero, block: vip_offer, when: {segment: vip}}
      - {slot: offer, block: vip_offer, when: {segment: vip}}
      - {slot: hero, block: onboarding, when: {segment: vip}}
    """
    (conflict,) = [c for c in rules(text).conflicts if c.startswith("unreachable")]
    assert conflict == (
        "unreachable: rule 3 (line 4) (hero -> onboarding) never fires: "
        "rule 1 (line 2) has the same conditions (segment vip)"
    )


def test_rule_after_an_unconditional_rule_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    text = """\
    rules:
      - {slot: hero, block: hero_default}
      - {slot: hero, block: vip_offer, when: {segment: vip}}
      - {slot: offer, block: vip_offer, when: {always: true}}
      - {slot: offer, block: onboarding}
    """
    with caplog.at_level(logging.WARNING, logger="personalizer.render.blocks"):
        loaded = rules(text)
    assert loaded.conflicts == (
        "unreachable: rule 2 (line 3) (hero -> vip_offer) never fires: "
        "rule 1 (line 2) before it has no condition for slot 'hero'",
        "unreachable: rule 4 (line 5) (offer -> onboarding) never fires: "
        "rule 3 (line 4) before it has no condition for slot 'offer'",
    )
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 2
    assert "test.yaml" in warned[0].getMessage()


def test_rule_whose_customers_an_earlier_rule_takes_is_reported() -> None:
    text = """\
    rules:
      - {slot: hero, block: vip_offer, when: {segment: vip}}
      - {slot: hero, block: cart_reminder, when: {all_segments: [vip, cart_abandoner]}}
      - {slot: hero, block: onboarding, when: {segment: vip, not_segment: vip}}
    """
    unreachable = [c for c in rules(text).conflicts if c.startswith("unreachable")]
    assert len(unreachable) == 2
    assert "rule 2 (line 3)" in unreachable[0]
    assert "matched first by rule 1 (line 2)" in unreachable[0]
    assert "rule 3 (line 4)" in unreachable[1]
    assert "contradict" in unreachable[1]


def test_overlap_is_reported_but_only_at_info(caplog: pytest.LogCaptureFixture) -> None:
    text = """\
    rules:
      - {slot: hero, block: vip_offer, when: {segment: vip}}
      - {slot: hero, block: cart_reminder, when: {segment: cart_abandoner}}
      - {slot: hero, block: onboarding, when: {segment: new_subscriber, not_segment: vip}}
      - {slot: hero, block: hero_default}
    """
    with caplog.at_level(logging.INFO, logger="personalizer.render.blocks"):
        loaded = rules(text)
    assert loaded.conflicts == (
        "overlap: rule 1 (line 2) (hero -> vip_offer) wins over rule 2 (line 3) "
        "(hero -> cart_reminder) when a customer is in both cart_abandoner and vip",
        # rule 1 and rule 3 cannot both hold (not_segment: vip): no overlap reported
        "overlap: rule 2 (line 3) (hero -> cart_reminder) wins over rule 3 (line 4) "
        "(hero -> onboarding) when a customer is in both cart_abandoner and new_subscriber "
        "and is not in vip",
    )
    assert {r.levelno for r in caplog.records if "overlap" in r.getMessage()} == {logging.INFO}


# ------------------------------------------------------------------------------------ loading
@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("rules:\n  - {slot: hero, block: vip_offer\n", 3, "YAML syntax error"),
        ("rule:\n  - {slot: hero, block: vip_offer}\n", 1, "a list under 'rules'"),
        (
            "rules:\n  - slot: hero\n    block: vip_offer\n    when:\n      segmnt: vip\n",
            5,
            "unknown condition 'segmnt'; did you mean segment",
        ),
        ("rules:\n  - block: vip_offer\n    when: {segment: vip}\n", 2, "rule 1 has no 'slot'"),
        (
            "rules:\n  - slot: hero\n    block: vip_ofer\n",
            3,
            "unknown block 'vip_ofer': no template blocks/vip_ofer.html.j2; did you mean vip_offer?",
        ),
        ("rules:\n  - slot: Hero Banner\n    block: vip_offer\n", 2, "slot must be lowercase"),
        (
            "rules:\n  - slot: hero\n    block: vip_offer\n    segment: vip\n",
            4,
            "unknown rule key 'segment' (conditions go under 'when:')",
        ),
        (
            "rules:\n  - slot: hero\n    block: vip_offer\n    params: [1, 2]\n",
            4,
            "params must be a mapping",
        ),
        (
            "rules:\n  - slot: hero\n    block: vip_offer\n    when: {any_segment: vip}\n",
            4,
            "condition 'any_segment' expects a non-empty list of segment names; got 'vip'",
        ),
        (
            "rules:\n  - slot: hero\n    block: vip_offer\n\n    when: {always: false}\n",
            5,
            "condition 'always' expects true",
        ),
        (
            "rules:\n  - slot: hero\n    block: vip_offer\n    when: {always: true, segment: vip}\n",
            4,
            "'always: true' cannot be combined",
        ),
    ],
)
def test_invalid_files_name_the_line_and_the_reason(text: str, line: int, reason: str) -> None:
    with pytest.raises(BlockRuleError) as caught:
        parse_block_rules(text, "mine.yaml", BLOCKS)
    assert caught.value.source == "mine.yaml"
    assert caught.value.line == line, caught.value
    assert reason in caught.value.reason
    assert str(caught.value).startswith(f"mine.yaml:{line}: ")


def test_load_from_a_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "blocks.yaml"
    path.write_text("rules:\n  - {slot: hero, block: no_such_block}\n", encoding="utf-8")
    with pytest.raises(BlockRuleError, match=rf"^{path}:2: unknown block 'no_such_block'"):
        load_block_rules(path)  # checked against the shipped block templates


def test_user_block_templates_are_known_blocks(tmp_path: Path) -> None:
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks" / "spring_sale.html.j2").write_text("<p>Spring!</p>", encoding="utf-8")
    known = available_blocks([tmp_path])
    assert {"spring_sale", "vip_offer", "offer_default", "hero_default"} <= known
    assert "spring_sale" not in available_blocks()
    text = "rules:\n  - {slot: banner, block: spring_sale}\n"
    with pytest.raises(BlockRuleError, match="unknown block 'spring_sale'"):
        parse_block_rules(text)
    assert parse_block_rules(text, blocks=known).rules[0].block == "spring_sale"


# ---------------------------------------------------------------------------------- rendering
def test_renderer_fills_slots_with_the_selected_blocks(tmp_path: Path) -> None:
    (tmp_path / "blocks").mkdir()
    (tmp_path / "blocks" / "banner.html.j2").write_text(
        '<p class="banner">{{ params.headline }} for {{ customer.first_name }}</p>',
        encoding="utf-8",
    )
    (tmp_path / "welcome.html.j2").write_text(
        '{% extends "layout.html.j2" %}{% block content %}{{ blocks.hero }}{% endblock %}',
        encoding="utf-8",
    )
    text = textwrap.dedent(
        """\
        rules:
          - slot: hero
            block: banner
            when: {segment: vip}
            params: {headline: "<b>20% off</b>"}
          - {slot: hero, block: hero_default}
        """
    )
    renderer = Renderer(
        [tmp_path], rules=parse_block_rules(text, blocks=available_blocks([tmp_path]))
    )
    context = sample_context("welcome", segments=["vip"]).model_dump()
    context["customer"]["first_name"] = "<i>Ada</i>"
    email = renderer.render("welcome", context)
    assert email.blocks["hero"].name == "banner"
    assert email.blocks["hero"].reason == "rule 1 (line 2): segment vip"
    # the block's own markup is HTML (styled by the layout's CSS); its data is escaped
    assert '<p class="banner" style="' in email.html
    assert "&lt;b&gt;20% off&lt;/b&gt; for &lt;i&gt;Ada&lt;/i&gt;" in email.html
    assert "<b>" not in email.html
    assert "&lt;p" not in email.html  # not escaped twice

    other = renderer.render("welcome", sample_context("welcome", segments=[]))
    assert other.blocks["hero"].name == "hero_default"
    assert "New in at Northwind Outfitters" in other.html
    assert "New in at Northwind Outfitters" in other.text  # the block's .txt.j2
