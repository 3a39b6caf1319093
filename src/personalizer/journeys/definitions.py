"""Declarative flows: the YAML format marketers write, its pydantic models and a located loader.

A flow file holds the frequency caps, an optional global holdout and a list of flows:

```yaml
caps: {per_week: 3, per_day: 1}    # journey emails per customer: any 7 days / one local day
holdout: 0.05                      # share of customers held out of every flow (global holdout)
flows:
  - name: cart_abandonment         # lowercase letters, digits, underscores; unique
    priority: 1                    # lower wins when caps make flows compete
    trigger: {event: add_to_cart}  # or {segment_entry: NAME} or {date: signed_up_at, every: year}
    re_entry: always               # never | always | restart | a duration such as 30d
    exit: [{event: order}]         # leaving the flow; {segment_exit: NAME} also
    max_lateness: 6h               # a step decided later than this after its moment is dropped
    holdout: 0.1                   # share held out of this flow (on top of the global one)
    steps:
      - name: reminder             # default step<k>; the campaign is "<flow>.<step>"
        wait: 1h                   # after the previous step's moment (the entry for the first)
        template: cart_reminder    # a shipped email template
      - name: discount
        after_entry: 24h           # or measured from the entry
        send_time: model           # the customer's best hour (send-time model), within send_within
        condition: {did_not: email_click}   # else the step is skipped (the flow goes on)
        params: {discount_code: personal, discount_percent: 10}
```

Triggers: `event` is an event type of `schema.EventType` or `order` (an order line or a purchase
event), optionally filtered by `category` or `product_id` of its product; `segment_entry` a segment
of the segment definitions; `date` either `signed_up_at` with `every: year` (the signup anniversary)
or a fixed moment ("2026-11-27 09:00", UTC). Conditions: `did` / `did_not` an event since the entry,
`in_segment` / `not_in_segment` at the step's moment; a list means all of them. Durations are a
number and a unit: `30m`, `1h`, `2d`, `1w`, or words ("48 hours"). Invalid files raise
`FlowDefinitionError` naming the file, the line, the field and the value.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from personalizer.located import LocatedError, known_name, load_yaml, node_line
from personalizer.schema import EventType

log = logging.getLogger(__name__)

DEFAULT_FILE = "default_flows.yaml"
ORDER = "order"
EVENTS = frozenset((ORDER, *(t.value for t in EventType)))
RE_ENTRY_WORDS = ("never", "always", "restart")
_ZERO = timedelta(0)
ANNIVERSARY_FIELD = "signed_up_at"

_UNITS = {
    "s": 1, "sec": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86_400, "day": 86_400, "days": 86_400,
    "w": 604_800, "wk": 604_800, "week": 604_800, "weeks": 604_800,
}  # fmt: skip
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]+)\s*$")


class FlowDefinitionError(LocatedError):
    """An invalid flow file: where (`source`, `line`, 1-based) and why (`reason`)."""


def parse_duration(value: Any) -> timedelta:
    """A duration from `30m`, `1h`, `2d`, `1w`, "48 hours" or 0 (zero is allowed: at once)."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return timedelta(0)
    match = _DURATION.match(value.lower()) if isinstance(value, str) else None
    if match is None or match.group(2) not in _UNITS:
        raise ValueError(
            f"bad duration {value!r}: expected a number and a unit (m, h, d, w), such as '48h'"
        )
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def format_duration(value: timedelta) -> str:
    """A duration the way flow files write it: `2d`, `36h`, `90m`, `0`."""
    total = int(value.total_seconds())
    for unit, size in (("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)):
        if total and total % size == 0:
            return f"{total // size}{unit}"
    return f"{total}s" if total else "0"


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, dict) else value


def _segment(name: str, info: ValidationInfo) -> str:
    known = (info.context or {}).get("segments")
    if known is None:
        return name
    prefixes = (info.context or {}).get("segment_prefixes", ())
    if any(name.startswith(p) for p in prefixes):
        return name
    return known_name(name, known, "segment")


def _event(name: str) -> str:
    return known_name(name, EVENTS, "event type")


def _template(name: str, info: ValidationInfo) -> str:
    known = (info.context or {}).get("templates")
    return name if known is None else known_name(name, known, "template")


EventName = Annotated[str, AfterValidator(_event)]
SegmentName = Annotated[str, AfterValidator(_segment)]
TemplateName = Annotated[str, AfterValidator(_template)]


class _Node(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _exactly_one(node: BaseModel, keys: Sequence[str]) -> str:
    given = [k for k in keys if getattr(node, k) is not None]
    if len(given) != 1:
        found = ", ".join(given) or "none"
        raise ValueError(f"needs exactly one of {', '.join(keys)}; found {found}")
    return given[0]


class Trigger(_Node):
    """What makes a customer enter a flow (see the module docstring)."""

    event: EventName | None = None
    segment_entry: SegmentName | None = None
    date: str | None = None
    every: Literal["year"] | None = None
    category: str | None = None
    product_id: str | None = None

    @field_validator("date")
    @classmethod
    def _date(cls, value: str) -> str:
        if value != ANNIVERSARY_FIELD:
            fixed_moment(value)
        return value

    @model_validator(mode="after")
    def _check(self) -> Trigger:
        kind = _exactly_one(self, ("event", "segment_entry", "date"))
        if (self.category or self.product_id) and kind != "event":
            raise ValueError("category and product_id filter event triggers only")
        if self.date == ANNIVERSARY_FIELD and self.every != "year":
            raise ValueError("date: signed_up_at needs 'every: year' (the signup anniversary)")
        if self.every is not None and self.date != ANNIVERSARY_FIELD:
            raise ValueError("every: year applies to date: signed_up_at only")
        return self

    @property
    def kind(self) -> Literal["event", "segment_entry", "date"]:
        """Which of the three trigger kinds this is."""
        if self.event is not None:
            return "event"
        return "segment_entry" if self.segment_entry is not None else "date"


def fixed_moment(value: str) -> datetime:
    """A fixed trigger date ("2026-11-27" or "2026-11-27 09:00", UTC) as a naive datetime."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(
            f"bad date {value!r}: expected signed_up_at or an ISO date such as 2026-11-27 09:00"
        ) from None
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


class Exit(_Node):
    """What takes a customer out of a flow: an event after the entry, or leaving a segment."""

    event: EventName | None = None
    segment_exit: SegmentName | None = None

    @model_validator(mode="after")
    def _check(self) -> Exit:
        _exactly_one(self, ("event", "segment_exit"))
        return self

    @property
    def reason(self) -> str:
        """How the exit is recorded: the event type, or `segment_exit:<name>`."""
        return self.event if self.event is not None else f"segment_exit:{self.segment_exit}"


class Condition(_Node):
    """A check at a step's moment; a step whose condition fails is skipped."""

    did: EventName | None = None
    did_not: EventName | None = None
    in_segment: SegmentName | None = None
    not_in_segment: SegmentName | None = None

    @model_validator(mode="after")
    def _check(self) -> Condition:
        _exactly_one(self, ("did", "did_not", "in_segment", "not_in_segment"))
        return self


Param = str | int | float | bool


class Step(_Node):
    """One email of a flow, its moment (from the entry or the previous step) and its checks."""

    name: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_]*$")
    wait: Duration | None = None
    after_entry: Duration | None = None
    send_time: Literal["model"] | None = None
    send_within: Duration = timedelta(days=1)
    template: TemplateName
    condition: Annotated[list[Condition], BeforeValidator(_as_list)] = Field(default_factory=list)
    params: dict[str, Param] = Field(default_factory=dict)
    max_lateness: Duration | None = None

    @field_validator("send_within")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value < timedelta(hours=1):
            raise ValueError(f"send_within must be at least 1h, got {value}")
        return value

    @model_validator(mode="after")
    def _check(self) -> Step:
        if self.wait is not None and self.after_entry is not None:
            raise ValueError("give wait or after_entry, not both")
        return self


class Flow(_Node):
    """One validated flow; `offsets` are the steps' moments after the entry."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    priority: int = Field(ge=0)
    trigger: Trigger
    steps: list[Step] = Field(min_length=1)
    exit: Annotated[list[Exit], BeforeValidator(_as_list)] = Field(default_factory=list)
    re_entry: str = "never"
    holdout: float = Field(default=0.0, ge=0.0, le=1.0)
    max_lateness: Duration = timedelta(days=1)
    enabled: bool = True
    line: int | None = None

    @field_validator("re_entry", mode="before")
    @classmethod
    def _re_entry(cls, value: Any) -> str:
        if isinstance(value, str) and value in RE_ENTRY_WORDS:
            return value
        try:
            parse_duration(value)
        except ValueError:
            raise ValueError(
                f"bad re_entry {value!r}: never, always, restart or a duration such as 30d"
            ) from None
        return str(value)

    @model_validator(mode="after")
    def _check(self) -> Flow:
        names, offsets = self.step_names, [_ZERO, *self.offsets]
        for k, (name, step) in enumerate(zip(names, self.steps, strict=True)):
            if name in names[:k]:
                raise ValueError(f"step name {name!r} used twice")
            if step.after_entry is not None and step.after_entry < offsets[k]:
                raise ValueError(
                    f"step {name!r}: after_entry {format_duration(step.after_entry)} is before "
                    f"the previous step's moment ({format_duration(offsets[k])})"
                )
        return self

    @property
    def step_names(self) -> list[str]:
        """Each step's name (`step<k>` when not given)."""
        return [s.name or f"step{k + 1}" for k, s in enumerate(self.steps)]

    @property
    def offsets(self) -> list[timedelta]:
        """Each step's moment after the entry (waits add up)."""
        out, at = [], _ZERO
        for step in self.steps:
            at = step.after_entry if step.after_entry is not None else at + (step.wait or _ZERO)
            out.append(at)
        return out

    @property
    def re_entry_after(self) -> timedelta | None:
        """The least time between two entries (`always`: 0), None for `never` and `restart`."""
        if self.re_entry in ("never", "restart"):
            return None
        return timedelta(0) if self.re_entry == "always" else parse_duration(self.re_entry)

    def lateness(self, k: int) -> timedelta:
        """How late step `k` may still be decided."""
        return self.steps[k].max_lateness or self.max_lateness

    @property
    def span(self) -> timedelta:
        """From the entry to the last step's moment plus its lateness."""
        return self.offsets[-1] + max(self.lateness(k) for k in range(len(self.steps)))


class Caps(_Node):
    """Frequency caps over all flows: journey emails per customer in any rolling 7 days, and per
    calendar day of the customer's time zone (None: no cap)."""

    per_week: int | None = Field(default=3, ge=1)
    per_day: int | None = Field(default=1, ge=1)


class FlowSet(_Node):
    """A flow file: caps, the global holdout share and the flows (enabled or not)."""

    caps: Caps = Caps()
    holdout: float = Field(default=0.0, ge=0.0, le=1.0)
    flows: list[Flow]

    @property
    def horizon(self) -> timedelta:
        """The longest a journey lasts, its lateness included (what a first run looks back)."""
        return max((f.span for f in self.enabled), default=timedelta(0))

    @property
    def enabled(self) -> list[Flow]:
        """The flows that run, most important first (then by name)."""
        return sorted((f for f in self.flows if f.enabled), key=lambda f: (f.priority, f.name))


# ------------------------------------------------------------------------------------- loading
@cache
def shipped_templates() -> frozenset[str]:
    """Names of the shipped emails that have all three parts (subject, HTML, text)."""
    folder = resources.files("personalizer.render").joinpath("templates")
    files = {p.name for p in folder.iterdir()}
    parts = (".subject.j2", ".html.j2", ".txt.j2")
    names = {f.removesuffix(".html.j2") for f in files if f.endswith(".html.j2")}
    return frozenset(n for n in names if n != "layout" and all(n + p in files for p in parts))


@cache
def default_segment_names() -> tuple[frozenset[str], tuple[str, ...]]:
    """Names of the shipped segments, and the prefixes of the per-category ones."""
    from personalizer.segments.definitions import default_segments

    segments = default_segments()
    names = frozenset(s.name for s in segments if s.for_each is None)
    prefixes = tuple(f"{s.name}_" for s in segments if s.for_each is not None)
    return names, prefixes


def load_flows(
    path: str | Path,
    *,
    segments: Collection[str] | None = None,
    templates: Collection[str] | None = None,
) -> FlowSet:
    """The flows of a YAML file.

    Args:
        path: the file.
        segments: segment names triggers and conditions may name (default: the shipped ones).
        templates: template names steps may use (default: the shipped ones).

    Raises:
        FlowDefinitionError: naming the file, the line, the field and the value.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    return parse_flows(text, str(path), segments=segments, templates=templates)


def default_flows() -> FlowSet:
    """The flows shipped with the project (`default_flows.yaml` beside this module)."""
    text = resources.files("personalizer.journeys").joinpath(DEFAULT_FILE).read_text("utf-8")
    return parse_flows(text, DEFAULT_FILE)


def parse_flows(
    text: str,
    source: str = "<string>",
    *,
    segments: Collection[str] | None = None,
    templates: Collection[str] | None = None,
) -> FlowSet:
    """The flows of YAML text; `source` names it in errors."""
    data, root = load_yaml(text, source, FlowDefinitionError)
    if not isinstance(data, dict) or not isinstance(data.get("flows"), list):
        raise FlowDefinitionError(
            source, node_line(root, []), "expected a mapping with a list under 'flows'"
        )
    names, prefixes = default_segment_names()
    context = {
        "segments": frozenset(segments) if segments is not None else names,
        "segment_prefixes": () if segments is not None else prefixes,
        "templates": frozenset(templates) if templates is not None else shipped_templates(),
    }
    flows: list[Flow] = []
    seen: dict[str, int | None] = {}
    for i, raw in enumerate(data["flows"]):
        loc: list[str | int] = ["flows", i]
        if not isinstance(raw, dict):
            raise _error(source, root, loc, "a flow must be a mapping with name, trigger, steps")
        line = node_line(root, [*loc, "name"])
        flow = _validate(Flow, {**raw, "line": line}, source, root, loc, context)
        if flow.name in seen:
            reason = f"name: flow {flow.name!r} defined twice (lines {seen[flow.name]} and {line})"
            raise _error(source, root, [*loc, "name"], reason)
        seen[flow.name] = line
        flows.append(flow)
    rest = {k: v for k, v in data.items() if k != "flows"}
    flow_set = _validate(FlowSet, {**rest, "flows": []}, source, root, [], context)
    log.debug("%d flows from %s", len(flows), source)
    return flow_set.model_copy(update={"flows": flows})


def _validate(
    model: type[Any],
    raw: dict[str, Any],
    source: str,
    root: yaml.Node | None,
    loc: list[str | int],
    context: dict[str, Any],
) -> Any:
    try:
        return model.model_validate(raw, context=context)
    except ValidationError as exc:
        errors = exc.errors()
        # an unknown key explains a "missing" one better (a misspelt field is both)
        error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        where = [p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function"))]
        field = ".".join(map(str, where))
        reason = str(error["msg"]).removeprefix("Value error, ")
        value = error.get("input")
        if isinstance(value, str | int | float) and repr(value) not in reason:
            reason = f"{reason} (value {value!r})"
        if error["type"] == "extra_forbidden":
            reason = f"unknown field {where[-1]!r}"
        elif error["type"] == "missing":
            reason = "missing"
        text = f"{field}: {reason}" if field else reason
        raise _error(source, root, [*loc, *where], text, key_last=True) from exc


def _error(
    source: str,
    root: yaml.Node | None,
    loc: Sequence[str | int],
    reason: str,
    *,
    key_last: bool = False,
) -> FlowDefinitionError:
    return FlowDefinitionError(source, node_line(root, loc, key_last=key_last), reason)
