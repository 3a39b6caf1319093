"""Journey state in memory: the journeys in progress, who entered which flow when, recent sends.

`Journeys` is a small table kept as parallel numpy arrays (the engine touches thousands of rows
per tick, which pandas would make slow); `JourneyState` holds the active ones, the journeys closed
since the state was loaded, the latest entry and end per flow and customer (what re-entry rules
read), and the send moments the frequency caps count. `queue.py` loads and saves it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields

import numpy as np
import pandas as pd

from personalizer.journeys.timeline import BEFORE_ALL, NEVER, Customers, to_timestamps

JOURNEY_COLUMNS = [
    "journey_id",
    "customer_id",
    "flow",
    "trigger_key",
    "product_id",
    "entered_at",
    "exit_at",
    "exit_reason",
    "next_step",
    "status",
    "holdout",
]


@dataclass
class Journeys:
    """Journeys as parallel arrays; `flow` indexes the engine's flows, times are seconds."""

    jid: np.ndarray
    code: np.ndarray
    flow: np.ndarray
    entered: np.ndarray
    exit_at: np.ndarray  # NEVER while no exit was seen
    exit_reason: np.ndarray
    next_step: np.ndarray
    next_due: np.ndarray  # the next step's moment, NEVER when none is left
    holdout: np.ndarray
    key: np.ndarray
    product: np.ndarray
    dirty: np.ndarray  # changed since loaded (to be saved)

    @classmethod
    def empty(cls) -> Journeys:
        """No journeys."""
        return cls.create(*(np.zeros(0, np.int64) for _ in range(5)))

    @classmethod
    def create(
        cls,
        code: np.ndarray,
        flow: np.ndarray,
        entered: np.ndarray,
        next_due: np.ndarray,
        holdout: np.ndarray,
        key: np.ndarray | None = None,
        product: np.ndarray | None = None,
        jid: np.ndarray | None = None,
    ) -> Journeys:
        """New journeys at step 0, with no exit, marked dirty."""
        n = len(code)
        none = np.full(n, None, dtype=object)
        return cls(
            jid=none.copy() if jid is None else np.asarray(jid, dtype=object),
            code=np.asarray(code, dtype=np.int64),
            flow=np.asarray(flow, dtype=np.int64),
            entered=np.asarray(entered, dtype=np.int64),
            exit_at=np.full(n, NEVER, dtype=np.int64),
            exit_reason=none.copy(),
            next_step=np.zeros(n, dtype=np.int64),
            next_due=np.asarray(next_due, dtype=np.int64),
            holdout=np.asarray(holdout, dtype=bool),
            key=none.copy() if key is None else np.asarray(key, dtype=object),
            product=none.copy() if product is None else np.asarray(product, dtype=object),
            dirty=np.ones(n, dtype=bool),
        )

    def __len__(self) -> int:
        return len(self.code)

    def take(self, rows: np.ndarray) -> Journeys:
        """The rows selected by a mask or positions."""
        return Journeys(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    def extend(self, other: Journeys) -> Journeys:
        """These journeys followed by `other`'s."""
        return concat([self, other])

    def to_frame(
        self, customers: Customers, flow_names: list[str], n_steps: np.ndarray
    ) -> pd.DataFrame:
        """`JOURNEY_COLUMNS`; status is active, completed or exited."""
        done = self.next_step >= n_steps[self.flow]
        status = np.where(self.exit_at < NEVER, "exited", np.where(done, "completed", "active"))
        exit_at = to_timestamps(np.where(self.exit_at < NEVER, self.exit_at, 0))
        exit_at[self.exit_at >= NEVER] = pd.NaT
        return pd.DataFrame(
            {
                "journey_id": self.jid,
                "customer_id": np.asarray(customers.ids, dtype=object)[self.code],
                "flow": np.asarray(flow_names, dtype=object)[self.flow],
                "trigger_key": self.key,
                "product_id": self.product,
                "entered_at": to_timestamps(self.entered),
                "exit_at": exit_at,
                "exit_reason": self.exit_reason,
                "next_step": self.next_step,
                "status": status,
                "holdout": self.holdout,
            }
        )


def concat(parts: list[Journeys]) -> Journeys:
    """Several tables of journeys as one."""
    return Journeys(
        **{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(Journeys)}
    )


def journey_id(flow: str, customer_id: str, key: object, entered: int) -> str:
    """Stable id of one entry of a customer into a flow."""
    raw = f"{flow}\x1f{customer_id}\x1f{key}\x1f{entered}".encode()
    return hashlib.sha256(raw).hexdigest()[:20]


@dataclass
class JourneyState:
    """Everything the engine carries from one run to the next.

    Attributes:
        active: journeys with steps still to come and no exit seen (and, between compactions,
            some that ended: `compact`).
        closed: journeys that ended (completed, exited) since the state was loaded.
        last_entered: (flows × customers) latest entry moment, BEFORE_ALL for none.
        last_end: (flows × customers) when the latest journey ends (its exit, or its last step).
        sends: send moments of queued emails per customer code, for the frequency caps.
        last_run: the `now` of the latest run, None before the first.
    """

    active: Journeys
    last_entered: np.ndarray
    last_end: np.ndarray
    sends: dict[int, list[int]] = field(default_factory=dict)
    closed: list[Journeys] = field(default_factory=list)
    last_run: int | None = None

    @classmethod
    def fresh(cls, n_flows: int, n_customers: int) -> JourneyState:
        """No journey yet."""
        shape = (n_flows, n_customers)
        return cls(
            Journeys.empty(),
            np.full(shape, BEFORE_ALL, dtype=np.int64),
            np.full(shape, BEFORE_ALL, dtype=np.int64),
        )

    def compact(self, *, force: bool = True) -> None:
        """Move the journeys that ended (no step left, or an exit) from `active` to `closed`.

        Ended journeys are inert where they are (no step is due, no exit or restart touches
        them), so without `force` they are moved only once they are a quarter of the rows:
        copying the arrays at every tick of a replay would cost more than it saves.
        """
        a = self.active
        ended = (a.next_due >= NEVER) | (a.exit_at < NEVER)
        count = int(ended.sum())
        if not count or (not force and count * 4 < len(a)):
            return
        self.closed.append(a.take(ended))
        self.active = a.take(~ended)

    def all_closed(self) -> Journeys:
        """The closed journeys as one table."""
        return concat([Journeys.empty(), *self.closed])
