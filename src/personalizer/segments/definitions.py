"""Declarative segment definitions: a YAML format, its pydantic models and a loader with line numbers.

A file holds a list under `segments:`; each entry is one segment:

```yaml
segments:
  - name: vip                      # unique, lowercase letters, digits and underscores
    description: Spent over 1,000 in the last 180 days.
    parameters: {amount: 1000, window: 180 days}
    condition:                     # one condition, possibly a combinator of others
      feature: spend               # a windowed metric (below), because `window` is given
      window: ${window}            # "${name}" is replaced by the parameter's value
      op: ">"
      value: ${amount}
```

Conditions (every one selects customers; missing values fail every comparison):

- `{feature: F, op: OP, value: X}`: a customer feature, one of `FEATURE_NAMES` of
  `features.customers` (recency, frequency, monetary over 30/90/180/365 days, engagement, ...; buyers
  only, NaN for the others except order counts and spend, which are 0) or of `SEGMENT_FEATURES`.
  The BG/NBD outputs `p_alive` and `expected_purchases` are fitted over the whole shop, so they
  are read as predictions, not features.
- `{feature: M, window: W, op: OP, value: X}`: a metric over the last W before `as_of`, for every
  customer: `spend`, `orders`, `human_open`, `machine_open`, or the count of any event type of
  `schema.EventType` (`email_open` counts both kinds of opens).
- `{sum: {M: weight, ...}, window: W, op: OP, value: X}`: a weighted sum of metrics over W, such
  as an email engagement score in which a click weighs more than an open and a machine open little.
- `{prediction: P, op: OP, value: X}`: a column of the model predictions (`PREDICTION_COLUMNS`, or
  `propensity_<category>`). A segment that needs predictions is skipped, with a logged reason, when
  they are not given.
- `for_each: category` (a key of the segment, beside `condition`): one segment per product
  category, named `<name>_<category>`; the condition reads `propensity_{category}` (the probability
  of buying in the category, `personalizer score categories`), and the categories are those of the
  predictions given.
- `{sequence: {event: A, without: B, delay: W, lookback: W, min_count: k, same_product: bool}}`:
  at least k events A from the last `lookback` that are at least `delay` old and followed by no
  event B up to `as_of` (with `same_product`, no B of the same product, counted per product).
  B `purchase` means a purchase event or an order line.
- `{all: [C, ...]}`, `{any: [C, ...]}`, `{not: C}`.

OP is one of `>`, `>=`, `<`, `<=`, `==`, `!=`, or `top` (X a share in (0, 1]: the customers with
the highest values, ties included). A window W is a number and a unit: "90 days", "48 hours",
"2 weeks", "30 minutes". Invalid definitions raise `SegmentDefinitionError` naming the line.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from personalizer.features.customers import FEATURE_NAMES
from personalizer.located import LocatedError, known_name, load_yaml, node_line
from personalizer.schema import EventType

log = logging.getLogger(__name__)

DEFAULT_FILE = "default_segments.yaml"
SEGMENT_FEATURES = ("days_since_signup", "email_consent")
PREDICTION_COLUMNS = frozenset(
    ("churn_probability", "predicted_value", "p_alive", "expected_purchases")
)
# BG/NBD outputs are fitted over the whole shop: segments read them as predictions.
FEATURES = frozenset((*FEATURE_NAMES, *SEGMENT_FEATURES)) - PREDICTION_COLUMNS
METRICS = frozenset(
    ("spend", "orders", "human_open", "machine_open", *(t.value for t in EventType))
)
PREDICTION_PATTERN = re.compile(r"^propensity_(?:[a-z0-9_]+|\{category\})$")
CATEGORY_PLACEHOLDER = "{category}"
CATEGORY_PREDICTION = re.compile(r"^propensity_([a-z0-9_]+)$")
EVENT_TYPES = frozenset(t.value for t in EventType)
OPS = (">", ">=", "<", "<=", "==", "!=", "top")
Op = Literal[">", ">=", "<", "<=", "==", "!=", "top"]

_UNITS = {"minute": 60, "hour": 3600, "day": 86_400, "week": 7 * 86_400}
_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+?)s?\s*$")
_PARAMETER = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")


class SegmentDefinitionError(LocatedError):
    """An invalid segment file: where (`source`, `line`, 1-based) and why (`reason`)."""


def parse_window(value: Any) -> timedelta:
    """A duration from text such as "90 days", "48 hours", "2 weeks" or "30 minutes"."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"a window needs a number and a unit, such as '90 days'; got {value!r}")
    match = _WINDOW.match(value.lower())
    if not match or match.group(2) not in _UNITS:
        raise ValueError(
            f"bad window {value!r}: expected a number and one of minutes, hours, days, weeks"
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"bad window {value!r}: must be positive")
    return timedelta(seconds=seconds)


Window = Annotated[timedelta, BeforeValidator(parse_window)]


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Comparison(_Node):
    """A feature or a windowed metric compared with a value."""

    feature: str
    window: Window | None = None
    op: Op
    value: float

    @model_validator(mode="after")
    def _check(self) -> Comparison:
        if self.window is None and self.feature in PREDICTION_COLUMNS:
            raise ValueError(
                f"{self.feature} is a model prediction: write 'prediction: {self.feature}'"
            )
        if self.window is None:
            known_name(self.feature, FEATURES, "feature")
        else:
            known_name(self.feature, METRICS, "windowed metric")
        _check_top(self.op, self.value)
        return self


class Score(_Node):
    """A weighted sum of windowed metrics compared with a value."""

    sum: dict[str, float] = Field(min_length=1)
    window: Window
    op: Op
    value: float

    @field_validator("sum")
    @classmethod
    def _metrics(cls, weights: dict[str, float]) -> dict[str, float]:
        for name in weights:
            known_name(name, METRICS, "windowed metric")
        return weights

    @model_validator(mode="after")
    def _check(self) -> Score:
        _check_top(self.op, self.value)
        return self


class PredictionComparison(_Node):
    """A column of the model predictions compared with a value."""

    prediction: str
    op: Op
    value: float

    @field_validator("prediction")
    @classmethod
    def _column(cls, name: str) -> str:
        if PREDICTION_PATTERN.match(name):
            return name
        return known_name(name, PREDICTION_COLUMNS, "prediction column")

    @model_validator(mode="after")
    def _check(self) -> PredictionComparison:
        _check_top(self.op, self.value)
        return self


class SequenceSpec(_Node):
    """Events A, at least `delay` old, not followed by an event B (see the module docstring)."""

    event: str
    without: str
    delay: Window
    lookback: Window = timedelta(days=30)
    min_count: int = Field(default=1, ge=1)
    same_product: bool = False

    @field_validator("event", "without")
    @classmethod
    def _type(cls, name: str) -> str:
        return known_name(name, EVENT_TYPES, "event type")

    @model_validator(mode="after")
    def _check(self) -> SequenceSpec:
        if self.delay >= self.lookback:
            raise ValueError("delay must be shorter than lookback")
        return self


class EventSequence(_Node):
    """Wrapper of `SequenceSpec` under the key `sequence`."""

    sequence: SequenceSpec


class AllOf(_Node):
    """Customers meeting every condition."""

    all: list[Condition] = Field(min_length=1)


class AnyOf(_Node):
    """Customers meeting at least one condition."""

    any: list[Condition] = Field(min_length=1)


class NotOf(_Node):
    """Customers not meeting the condition (missing values included)."""

    not_: Condition = Field(alias="not")


Condition = Comparison | Score | PredictionComparison | EventSequence | AllOf | AnyOf | NotOf
for _model in (AllOf, AnyOf, NotOf):
    _model.model_rebuild()
_KINDS: dict[str, type[_Node]] = {
    "feature": Comparison,
    "sum": Score,
    "prediction": PredictionComparison,
    "sequence": EventSequence,
    "all": AllOf,
    "any": AnyOf,
    "not": NotOf,
}


def _check_top(op: str, value: float) -> None:
    if op == "top" and not 0 < value <= 1:
        raise ValueError(f"op 'top' takes a share in (0, 1], got {value}")


class SegmentDefinition(_Node):
    """One validated segment: `condition` has its parameters substituted."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    parameters: dict[str, float | str] = Field(default_factory=dict)
    condition: Condition
    for_each: Literal["category"] | None = None
    line: int | None = None

    @model_validator(mode="after")
    def _placeholder(self) -> SegmentDefinition:
        uses = any(CATEGORY_PLACEHOLDER in p for p in _predictions(self.condition))
        if self.for_each == "category" and not uses:
            raise ValueError("for_each: category needs a condition on propensity_{category}")
        if self.for_each is None and uses:
            raise ValueError("propensity_{category} needs 'for_each: category' on the segment")
        return self

    @property
    def needs_predictions(self) -> list[str]:
        """Prediction columns the condition reads (empty for segments of features only)."""
        return sorted(_predictions(self.condition))

    def for_categories(self, categories: Iterable[str]) -> list[SegmentDefinition]:
        """A `for_each: category` segment made concrete, one per category slug."""
        if self.for_each != "category":
            return [self]

        def concrete(slug: str) -> Callable[[Condition], Condition]:
            def leaf(condition: Condition) -> Condition:
                if isinstance(condition, PredictionComparison):
                    name = condition.prediction.replace(CATEGORY_PLACEHOLDER, slug)
                    return condition.model_copy(update={"prediction": name})
                return condition

            return leaf

        return [
            self.model_copy(
                update={
                    "name": f"{self.name}_{slug}",
                    "condition": map_leaves(self.condition, concrete(slug)),
                    "for_each": None,
                }
            )
            for slug in sorted(set(categories))
        ]


def map_leaves(condition: Condition, fn: Callable[[Condition], Condition]) -> Condition:
    """`condition` with every leaf (a condition that is no combinator) replaced by `fn(leaf)`."""
    if isinstance(condition, AllOf):
        return condition.model_copy(update={"all": [map_leaves(c, fn) for c in condition.all]})
    if isinstance(condition, AnyOf):
        return condition.model_copy(update={"any": [map_leaves(c, fn) for c in condition.any]})
    if isinstance(condition, NotOf):
        return condition.model_copy(update={"not_": map_leaves(condition.not_, fn)})
    return fn(condition)


def _predictions(condition: Condition) -> set[str]:
    if isinstance(condition, PredictionComparison):
        return {condition.prediction}
    if isinstance(condition, AllOf | AnyOf):
        children = condition.all if isinstance(condition, AllOf) else condition.any
        return set().union(*(_predictions(c) for c in children))
    if isinstance(condition, NotOf):
        return _predictions(condition.not_)
    return set()


# ------------------------------------------------------------------------------------- loading
Overrides = dict[str, dict[str, float | str]]


def load_segments(path: str | Path, overrides: Overrides | None = None) -> list[SegmentDefinition]:
    """The segment definitions of a YAML file.

    Args:
        path: the YAML file.
        overrides: parameter values replacing the file's, by segment name, such as
            `{"vip": {"amount": 2000}}`.

    Raises:
        SegmentDefinitionError: naming the file, the line and the reason.
    """
    path = Path(path)
    return parse_segments(path.read_text(encoding="utf-8"), str(path), overrides)


def default_segments(overrides: Overrides | None = None) -> list[SegmentDefinition]:
    """The segments shipped with the project (`default_segments.yaml` beside this module)."""
    text = resources.files("personalizer.segments").joinpath(DEFAULT_FILE).read_text("utf-8")
    return parse_segments(text, DEFAULT_FILE, overrides)


def parse_segments(
    text: str, source: str = "<string>", overrides: Overrides | None = None
) -> list[SegmentDefinition]:
    """The segment definitions of YAML text; `source` names it in errors."""
    data, root = load_yaml(text, source, SegmentDefinitionError)
    at = _Locator(source, root)
    if not isinstance(data, dict) or not isinstance(data.get("segments"), list):
        raise at.error([], "expected a mapping with a list under 'segments'")
    overrides = dict(overrides or {})
    out: list[SegmentDefinition] = []
    seen: dict[str, int | None] = {}
    for i, raw in enumerate(data["segments"]):
        loc: list[str | int] = ["segments", i]
        name = raw.get("name") if isinstance(raw, dict) else None
        definition = _definition(raw, loc, at, overrides.pop(str(name), {}))
        if definition.name in seen:
            raise at.error(
                [*loc, "name"],
                f"segment {definition.name!r} defined twice "
                f"(lines {seen[definition.name]} and {definition.line})",
            )
        seen[definition.name] = definition.line
        out.append(definition)
    if overrides:
        raise SegmentDefinitionError(
            source, None, f"overrides of unknown segments {sorted(overrides)}"
        )
    log.debug("%d segment definitions from %s", len(out), source)
    return out


class _Locator:
    """Lines of the YAML nodes of one document, for error messages."""

    def __init__(self, source: str, root: yaml.Node | None) -> None:
        self.source, self.root = source, root
        # Where a substituted value came from: errors about it point at the parameter.
        self.parameter_of: dict[tuple[str | int, ...], tuple[list[str | int], str]] = {}

    def error(self, loc: Sequence[str | int], reason: str) -> SegmentDefinitionError:
        if tuple(loc) in self.parameter_of:
            loc, name = self.parameter_of[tuple(loc)]
            reason = f"{reason} (parameter {name!r})"
        return SegmentDefinitionError(self.source, self.line(loc), reason)

    def line(self, loc: Sequence[str | int]) -> int | None:
        """1-based line of the deepest node on the path `loc` (keys and list positions)."""
        return node_line(self.root, loc)


def _definition(
    raw: Any, loc: list[str | int], at: _Locator, override: dict[str, float | str]
) -> SegmentDefinition:
    if not isinstance(raw, dict):
        raise at.error(loc, "a segment must be a mapping with name, description, condition")
    parameters = raw.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise at.error([*loc, "parameters"], "parameters must be a mapping of name to value")
    unknown = sorted(set(override) - set(parameters))
    if unknown:
        raise at.error([*loc, "parameters"], f"overrides of unknown parameters {unknown}")
    parameters = {**parameters, **override}
    if "condition" not in raw:
        raise at.error(loc, "missing condition")
    condition = _substitute(raw["condition"], parameters, [*loc, "condition"], at)
    _check_kinds(condition, [*loc, "condition"], at)
    fields = {**raw, "parameters": parameters, "condition": condition}
    try:
        return SegmentDefinition.model_validate({**fields, "line": at.line([*loc, "name"])})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = [*loc, *error["loc"]]
        reason = str(error["msg"]).removeprefix("Value error, ")
        raise at.error(where, f"{'.'.join(map(str, error['loc']))}: {reason}") from exc


def _check_kinds(raw: Any, loc: list[str | int], at: _Locator) -> None:
    """Each condition names exactly one kind; validating node by node gives the precise line."""
    if not isinstance(raw, dict):
        raise at.error(loc, f"a condition must be a mapping with one of {', '.join(_KINDS)}")
    kinds = [k for k in _KINDS if k in raw]
    if len(kinds) != 1:
        found = ", ".join(kinds or map(str, raw)) or "nothing"
        raise at.error(loc, f"a condition needs exactly one of {', '.join(_KINDS)}; found {found}")
    kind = kinds[0]
    if kind in ("all", "any", "not") and len(raw) > 1:
        raise at.error(loc, f"'{kind}' takes no other keys, found {sorted(set(raw) - {kind})}")
    if kind in ("all", "any"):
        if not isinstance(raw[kind], list) or not raw[kind]:
            raise at.error([*loc, kind], f"'{kind}' takes a non-empty list of conditions")
        for i, child in enumerate(raw[kind]):
            _check_kinds(child, [*loc, kind, i], at)
    elif kind == "not":
        _check_kinds(raw[kind], [*loc, kind], at)
    else:
        try:
            _KINDS[kind].model_validate(raw)
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(map(str, error["loc"]))
            reason = str(error["msg"]).removeprefix("Value error, ")
            raise at.error(
                [*loc, *error["loc"]], f"{field}: {reason}" if field else reason
            ) from exc


def _substitute(raw: Any, parameters: dict[str, Any], loc: list[str | int], at: _Locator) -> Any:
    """`raw` with every "${name}" replaced by the parameter's value."""
    if isinstance(raw, dict):
        return {k: _substitute(v, parameters, [*loc, k], at) for k, v in raw.items()}
    if isinstance(raw, list):
        return [_substitute(v, parameters, [*loc, i], at) for i, v in enumerate(raw)]
    if isinstance(raw, str) and (match := _PARAMETER.match(raw.strip())):
        if match.group(1) not in parameters:
            raise at.error(loc, f"unknown parameter {match.group(1)!r}")
        at.parameter_of[tuple(loc)] = ([*loc[:2], "parameters", match.group(1)], match.group(1))
        return parameters[match.group(1)]
    return raw
