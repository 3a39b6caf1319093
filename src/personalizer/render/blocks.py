"""Content blocks chosen by rules kept as data: which block fills which slot of an email.

A YAML file holds a list under `rules:`; each rule gives one slot one block, under conditions:

```yaml
rules:
  - slot: hero                     # a name the templates use: {{ blocks.hero }}
    block: vip_offer               # the template blocks/vip_offer.html.j2 (and .txt.j2, optional)
    when: {segment: vip}           # all conditions must hold; none (or always: true) = fallback
    params: {percent: 20}          # passed to the block template as `params`
  - slot: hero
    block: hero_default            # the slot's fallback, last
```

Conditions, under `when:` (several in one rule must all hold):

- `segment: S`: the customer is in segment S;
- `any_segment: [S, ...]`: in at least one of them; `all_segments: [S, ...]`: in all of them;
- `not_segment: S`: not in S;
- `viewed_category: C`: C is among the context's `viewed_categories` (category slugs viewed in
  the last 30 days);
- `always: true`: no condition (the same as leaving `when` out).

**Precedence: first match wins.** Rules are read in file order; for each slot the *first* rule
whose conditions all hold gives the slot its block, and the later rules of that slot are not
looked at. Put the specific rules first and end each slot with its fallback. A slot no rule
matches stays empty.

At load, rules that can never fire are reported (`BlockRules.conflicts`, logged as warnings):
one after an unconditional rule of the same slot, one with the same conditions as an earlier
rule, one whose customers all match an earlier rule, one whose conditions contradict. Overlaps,
two rules of a slot that can both hold for one customer ("overlap: rule 1 wins over rule 3 when a
customer is in both vip and cart_abandoner"), are listed too but logged at INFO: they are how
precedence is meant to be used. Invalid files raise `BlockRuleError` naming the file and line.
"""

from __future__ import annotations

import difflib
import functools
import logging
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from personalizer.located import LocatedError, load_yaml, node_line
from personalizer.render.environment import TemplateLoader

log = logging.getLogger(__name__)

DEFAULT_FILE = "default_blocks.yaml"
BLOCKS_FOLDER = "blocks"
RULE_KEYS = ("slot", "block", "when", "params", "description")
CONDITION_KEYS = (
    "segment",
    "any_segment",
    "all_segments",
    "not_segment",
    "viewed_category",
    "always",
)
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


class BlockRuleError(LocatedError):
    """An invalid block rule file: where (`source`, `line`, 1-based) and why (`reason`)."""


class When(BaseModel):
    """The conditions of one rule; all must hold. No condition at all always holds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    segment: str | None = None
    any_segment: tuple[str, ...] | None = Field(default=None, min_length=1)
    all_segments: tuple[str, ...] | None = Field(default=None, min_length=1)
    not_segment: str | None = None
    viewed_category: str | None = None
    always: Literal[True] | None = None

    @property
    def required(self) -> frozenset[str]:
        """Segments the customer must all be in."""
        return frozenset((*([self.segment] if self.segment else []), *(self.all_segments or ())))

    @property
    def any_of(self) -> tuple[frozenset[str], ...]:
        """Sets of segments the customer must be in one of."""
        return (frozenset(self.any_segment),) if self.any_segment else ()

    @property
    def excluded(self) -> frozenset[str]:
        """Segments the customer must not be in."""
        return frozenset([self.not_segment] if self.not_segment else [])

    @property
    def categories(self) -> frozenset[str]:
        """Categories the customer must have viewed."""
        return frozenset([self.viewed_category] if self.viewed_category else [])

    @property
    def unconditional(self) -> bool:
        """True when the rule holds for every customer."""
        return not (self.required or self.any_of or self.excluded or self.categories)

    def matches(self, segments: Collection[str], categories: Collection[str]) -> bool:
        """Whether a customer in `segments` who viewed `categories` meets every condition."""
        return (
            all(s in segments for s in self.required)
            and not any(s in segments for s in self.excluded)
            and all(any(s in segments for s in group) for group in self.any_of)
            and all(c in categories for c in self.categories)
        )

    def describe(self) -> str:
        """The conditions in words, as in the file: "segment vip and viewed_category shoes"."""
        parts = []
        for key in CONDITION_KEYS[:-1]:
            value = getattr(self, key)
            if value:
                shown = f"[{', '.join(value)}]" if isinstance(value, tuple) else value
                parts.append(f"{key} {shown}")
        return " and ".join(parts) or "always"


@dataclass(frozen=True)
class BlockRule:
    """One rule: `index` is its 1-based position in the file, `line` where it starts."""

    index: int
    line: int | None
    slot: str
    block: str
    when: When = field(default_factory=When)
    params: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def label(self) -> str:
        """ "rule 3 (line 14)", the way messages name the rule."""
        return f"rule {self.index}" + (f" (line {self.line})" if self.line is not None else "")


@dataclass(frozen=True)
class BlockRules:
    """A loaded rule file: its rules in file order and what is wrong or notable about them."""

    rules: tuple[BlockRule, ...]
    source: str = "<string>"
    conflicts: tuple[str, ...] = ()

    @functools.cached_property
    def slots(self) -> tuple[str, ...]:
        """Every slot some rule fills, in order of first appearance."""
        return tuple(dict.fromkeys(rule.slot for rule in self.rules))


@dataclass(frozen=True)
class SelectedBlock:
    """The block a slot gets: `rule_index` (1-based) and `reason` say which rule chose it."""

    name: str
    params: Mapping[str, Any]
    rule_index: int
    reason: str


def select_blocks(
    rules: BlockRules | Sequence[BlockRule], context: Mapping[str, Any]
) -> dict[str, SelectedBlock]:
    """The block of each slot for one customer: the first matching rule of the slot wins.

    Args:
        rules: the rules, in file order.
        context: reads `segments` (segment names) and `viewed_categories` (category slugs).

    Returns:
        By slot, the chosen block; slots no rule matches are absent.
    """
    segments = frozenset(context.get("segments") or ())
    categories = frozenset(context.get("viewed_categories") or ())
    chosen: dict[str, SelectedBlock] = {}
    for rule in rules.rules if isinstance(rules, BlockRules) else rules:
        if rule.slot in chosen or not rule.when.matches(segments, categories):
            continue
        reason = f"{rule.label}: {rule.when.describe()}"
        chosen[rule.slot] = SelectedBlock(rule.block, rule.params, rule.index, reason)
    return chosen


# ------------------------------------------------------------------------------------- loading
def load_block_rules(path: str | Path, blocks: Collection[str] | None = None) -> BlockRules:
    """The rules of a YAML file.

    Args:
        path: the YAML file.
        blocks: the block templates that exist (`available_blocks`); by default the shipped ones.

    Raises:
        BlockRuleError: naming the file, the line and the reason.
    """
    path = Path(path)
    return parse_block_rules(path.read_text(encoding="utf-8"), str(path), blocks)


def default_block_rules(blocks: Collection[str] | None = None) -> BlockRules:
    """The rules shipped with the project (`default_blocks.yaml` beside this module)."""
    text = resources.files("personalizer.render").joinpath(DEFAULT_FILE).read_text("utf-8")
    return parse_block_rules(text, DEFAULT_FILE, blocks)


def available_blocks(template_dirs: Iterable[str | Path] = ()) -> frozenset[str]:
    """Names of the block templates (`blocks/<name>.html.j2`) in the folders and shipped ones."""
    suffix = ".html.j2"
    return frozenset(
        name.removeprefix(f"{BLOCKS_FOLDER}/").removesuffix(suffix)
        for name in TemplateLoader(list(template_dirs)).list_templates()
        if name.startswith(f"{BLOCKS_FOLDER}/") and name.endswith(suffix) and name.count("/") == 1
    )


def parse_block_rules(
    text: str, source: str = "<string>", blocks: Collection[str] | None = None
) -> BlockRules:
    """The rules of YAML text; `source` names it in errors (see `load_block_rules`)."""
    data, root = load_yaml(text, source, BlockRuleError)
    known = available_blocks() if blocks is None else frozenset(blocks)
    at = _Locator(source, root)
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise at.error([], "expected a mapping with a list under 'rules'")
    extra = sorted(set(data) - {"rules"})
    if extra:
        raise at.error([extra[0]], f"unknown top-level key {extra[0]!r}; expected only 'rules'")
    rules = tuple(_rule(raw, i + 1, ["rules", i], at, known) for i, raw in enumerate(data["rules"]))
    conflicts = tuple(find_conflicts(rules))
    for message in conflicts:
        level = logging.INFO if message.startswith("overlap") else logging.WARNING
        log.log(level, "%s: %s", source, message)
    log.debug("%d block rules from %s", len(rules), source)
    return BlockRules(rules, source, conflicts)


def _rule(
    raw: Any, index: int, loc: list[str | int], at: _Locator, known: frozenset[str]
) -> BlockRule:
    if not isinstance(raw, dict):
        raise at.error(loc, "a rule must be a mapping with slot, block and optionally when, params")
    for key in raw:
        if key not in RULE_KEYS:
            hint = _did_you_mean(str(key), (*RULE_KEYS, *CONDITION_KEYS))
            nested = " (conditions go under 'when:')" if key in CONDITION_KEYS else ""
            raise at.error([*loc, key], f"unknown rule key {key!r}{nested}{hint}")
    for key in ("slot", "block"):
        if key not in raw:
            raise at.error(loc, f"rule {index} has no {key!r}")
        if not isinstance(raw[key], str) or not _is_name(raw[key]):
            raise at.error(
                [*loc, key], f"{key} must be lowercase letters, digits and _; got {raw[key]!r}"
            )
    if raw["block"] not in known:
        hint = _did_you_mean(raw["block"], known)
        raise at.error(
            [*loc, "block"],
            f"unknown block {raw['block']!r}: no template "
            f"{BLOCKS_FOLDER}/{raw['block']}.html.j2{hint}",
        )
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        raise at.error([*loc, "params"], "params must be a mapping of name to value")
    when = _when(raw.get("when"), [*loc, "when"], at)
    description = raw.get("description") or ""
    return BlockRule(index, at.line(loc), raw["slot"], raw["block"], when, params, str(description))


def _when(raw: Any, loc: list[str | int], at: _Locator) -> When:
    if raw is None:
        return When()
    if not isinstance(raw, dict):
        raise at.error(loc, f"'when' must be a mapping of conditions: {', '.join(CONDITION_KEYS)}")
    for key in raw:
        if key not in CONDITION_KEYS:
            hint = _did_you_mean(str(key), CONDITION_KEYS)
            raise at.error([*loc, key], f"unknown condition {key!r}{hint}")
    if raw.get("always") is True and len(raw) > 1:
        raise at.error([*loc, "always"], "'always: true' cannot be combined with other conditions")
    try:
        return When.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else ""
        expected = {
            "any_segment": "a non-empty list of segment names",
            "all_segments": "a non-empty list of segment names",
            "always": "true (leave 'when' out for the same effect)",
        }.get(key, "a segment or category name")
        raise at.error(
            [*loc, key], f"condition {key!r} expects {expected}; got {raw.get(key)!r}"
        ) from exc


def _is_name(value: str) -> bool:
    return NAME_PATTERN.match(value) is not None


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(choices), n=3)
    return f"; did you mean {', '.join(close)}?" if close else ""


class _Locator:
    """Lines of the YAML nodes of one document, for error messages."""

    def __init__(self, source: str, root: yaml.Node | None) -> None:
        self.source, self.root = source, root

    def error(self, loc: Sequence[str | int], reason: str) -> BlockRuleError:
        return BlockRuleError(self.source, self.line(loc), reason)

    def line(self, loc: Sequence[str | int]) -> int | None:
        """1-based line of the deepest node on the path `loc` (keys and list positions)."""
        return node_line(self.root, loc, key_last=True)


# ----------------------------------------------------------------------------------- conflicts
def find_conflicts(rules: Sequence[BlockRule]) -> list[str]:
    """Readable reports of rules that can never fire, and of overlapping rules (see module doc)."""
    out: list[str] = []
    by_slot: dict[str, list[BlockRule]] = {}
    for rule in rules:
        earlier = by_slot.setdefault(rule.slot, [])
        never = _never_fires(rule, earlier)
        if never:
            out.append(f"unreachable: {_name(rule)} never fires: {never}")
        else:
            out.extend(
                f"overlap: {_name(first)} wins over {_name(rule)} when a customer "
                f"{_both(first.when, rule.when)}"
                for first in earlier
                if not rule.when.unconditional and _compatible(first.when, rule.when)
            )
        earlier.append(rule)
    return out


def _name(rule: BlockRule) -> str:
    return f"{rule.label} ({rule.slot} -> {rule.block})"


def _never_fires(rule: BlockRule, earlier: Sequence[BlockRule]) -> str | None:
    if not _compatible(rule.when, rule.when):
        return f"its conditions contradict each other ({rule.when.describe()})"
    for first in earlier:
        if first.when.unconditional:
            return f"{first.label} before it has no condition for slot {rule.slot!r}"
        if first.when == rule.when:
            return f"{first.label} has the same conditions ({rule.when.describe()})"
        if _implies(rule.when, first.when):
            return (
                f"every customer it matches ({rule.when.describe()}) is matched first by "
                f"{first.label} ({first.when.describe()})"
            )
    return None


def _implies(a: When, b: When) -> bool:
    """Whether every customer meeting `a` meets `b` (a sufficient test)."""
    return (
        b.required <= a.required
        and b.excluded <= a.excluded
        and b.categories <= a.categories
        and all(
            bool(group & a.required) or any(mine <= group for mine in a.any_of)
            for group in b.any_of
        )
    )


def _compatible(a: When, b: When) -> bool:
    """Whether some customer can meet both `a` and `b`."""
    required, excluded = a.required | b.required, a.excluded | b.excluded
    return not (required & excluded) and all(
        bool(group - excluded) for group in (*a.any_of, *b.any_of)
    )


def _both(a: When, b: When) -> str:
    """What a customer meeting both `a` and `b` is: "is in both vip and cart_abandoner"."""
    segments = sorted(a.required | b.required)
    parts = []
    if len(segments) == 2:
        parts.append(f"is in both {segments[0]} and {segments[1]}")
    elif segments:
        parts.append(f"is in {', '.join(segments)}")
    parts += [f"is in one of {', '.join(sorted(g))}" for g in (*a.any_of, *b.any_of)]
    parts += [f"is not in {s}" for s in sorted(a.excluded | b.excluded)]
    parts += [f"has viewed {c}" for c in sorted(a.categories | b.categories)]
    return " and ".join(parts)
