"""Decisions: for one customer and one email, the segments, products, send time, scores and content.

`Decider` answers from a `Snapshot` (precomputed, in memory) and renders with `render.Renderer`.
Every answer says why (`reasons`) and which model versions it used, and falls back instead of
failing: no recommender → popular products; no send-time model or no history → the shop's best
hour; no churn or engagement model → no score, said in the reasons.

Rules that hold for every decision:
- consent: a customer without email consent gets `send: false` and no content, ever;
- idempotence: the `decision_id` is a hash of customer, campaign, template and UTC day, and a retry
  within the cache's reach returns the very same decision (a renderer may retry safely);
  the cache keeps each decision as its JSON (`Encoded`), one object instead of a decision's
  hundred dicts and lists: freeing those, long after they were made, cost 7% of the service's
  fresh decisions a second, and the JSON is what the service answers anyway;
- no PII beyond the greeting name: decisions never carry an email address.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import hmac
import itertools
import multiprocessing
import os
import signal
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo

import orjson
import pandas as pd

from personalizer.decisions.snapshot import Snapshot
from personalizer.render import EmailContext, Renderer, TemplateError
from personalizer.render.blocks import SelectedBlock, select_blocks
from personalizer.render.environment import utm

Strategy = Literal["personal", "also_bought", "next_purchase", "trending"]
STRATEGIES: tuple[str, ...] = ("personal", "also_bought", "next_purchase", "trending")
TEMPLATES = (
    "welcome",
    "vip_offer",
    "cart_reminder",
    "browse_reminder",
    "post_purchase",
    "win_back",
)
CACHE_DECISIONS = 4_096  # recent decisions kept for retries, as JSON (~12 KB each)
CARD_BASES = 100_000  # product cards' fixed parts kept, by product, campaign, slot and place
QUIET_HOURS = (22, 7)  # local hours never chosen for a send (22:00 to 06:59)
_WEEK = 168
_ONE_WEEK = timedelta(days=7)
Candidate = tuple[str, float, str, str]  # product_id, score, strategy, reason
_CONTEXT_DEFAULTS: dict[str, Any] = {
    name: (field.default_factory() if field.default_factory is not None else field.default)  # type: ignore[call-arg]
    for name, field in EmailContext.model_fields.items()
    if not field.is_required()
}


class UnknownCustomer(KeyError):
    """The customer is in neither the customers table nor the orders."""

    def __init__(self, customer_id: str) -> None:
        super().__init__(customer_id)
        self.customer_id = customer_id

    def __str__(self) -> str:
        return f"customer_id: unknown customer {self.customer_id!r}"


@dataclass(frozen=True)
class ShopInfo:
    """The sender, for links: home page, currency and the secret of personal codes and links."""

    name: str = "Personalizer Shop"
    url: str = "https://shop.example"
    currency: str = "EUR"
    secret: str = "personalizer"  # set PERSONALIZER_SECRET in production


@dataclass(frozen=True)
class Filters:
    """Product filters of `recommend`."""

    category: str | None = None
    max_price: float | None = None
    in_stock_only: bool = True
    exclude: frozenset[str] = frozenset()


_NO_FILTERS = Filters()  # frozen: made once, not for each decision


def encode(value: Any) -> bytes:
    """`value` as the service's JSON: numpy numbers as numbers, anything else JSON cannot hold
    (a timestamp) as its text."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY, default=str)


class Encoded(NamedTuple):
    """A decision as the service answers it: its JSON, and whether it says to send."""

    body: bytes
    send: bool


class Decider:
    """Answers decisions from a snapshot; `swap` installs a new snapshot (a reload) atomically."""

    def __init__(
        self,
        snapshot: Snapshot,
        renderer: Renderer | None = None,
        shop: ShopInfo | None = None,
        cache_size: int = CACHE_DECISIONS,
    ) -> None:
        self.snapshot = snapshot
        self.renderer = renderer or Renderer()
        self.shop = shop or ShopInfo()
        self._keyed: tuple[str, hmac.HMAC] | None = None  # `_sign`'s keyed state, by secret
        self._cache: OrderedDict[tuple[str, int], Encoded] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._blocks: dict[tuple[frozenset[str], frozenset[str]], dict[str, SelectedBlock]] = {}
        # called with each decision made (not a cached one handed out again): the audit log
        self.on_decision: Callable[[dict[str, Any]], None] | None = None
        self._describe(snapshot)

    def swap(self, snapshot: Snapshot, *, keep_decisions: bool = True) -> None:
        """Serve from `snapshot` from now on.

        Decisions already made stay in the cache by default, so a renderer retrying across a
        reload gets the decision it was given (new ones use the new snapshot); previews, which
        should show the new models at once, drop them.
        """
        with self._lock:
            self.snapshot = snapshot
            self._describe(snapshot)
            if not keep_decisions:
                self._cache.clear()

    def _describe(self, snapshot: Snapshot) -> None:
        # What every decision repeats about the snapshot, computed once per snapshot.
        self._versions = snapshot.versions()
        self._degraded = snapshot.degraded
        self._card_base: dict[tuple[str, str, str, int], dict[str, Any]] = {}
        self._trending = [
            (p, s, "trending", "popular in the last 30 days") for p, s in snapshot.trending
        ]

    # ------------------------------------------------------------------------------- parts
    def known(self, customer_id: str) -> bool:
        snap = self.snapshot
        return customer_id in snap.customers or customer_id in snap.purchased

    def _require(self, customer_id: str) -> None:
        if not self.known(customer_id):
            raise UnknownCustomer(customer_id)

    def segments(self, customer_id: str) -> list[str]:
        """The segments the customer is in now (live: events update them)."""
        self._require(customer_id)
        updater = self.snapshot.updater
        return sorted(updater.segments_of(customer_id)) if updater is not None else []

    def scores(self, customer_id: str) -> dict[str, Any]:
        """Churn (with reasons), engagement and predicted value; None where no model answers."""
        self._require(customer_id)
        snap = self.snapshot
        churn = snap.churn.get(customer_id)
        engaged = snap.engagement.get(customer_id)
        return {
            "churn": None
            if churn is None
            else {"probability": round(churn[0], 4), "reasons": churn[2][:3]},
            "value": None if churn is None else {"predicted_value": round(churn[1], 2)},
            "engagement": None
            if engaged is None
            else {
                "p_open": round(engaged[0], 4),
                "p_click": round(engaged[1], 4),
                "p_purchase": round(engaged[2], 4),
            },
        }

    def send_time(self, customer_id: str, now: pd.Timestamp | None = None) -> dict[str, Any]:
        """The next moment to send: the customer's best local hour, else the shop's."""
        self._require(customer_id)
        snap = self.snapshot
        at = _utc_now() if now is None else now
        customer = snap.customers.get(customer_id)
        zone = customer.timezone if customer is not None else "UTC"
        mine = snap.send_hour.get(customer_id)
        if mine is not None:
            hour, confidence, source = mine[0], mine[1], "customer"
            reason = f"the customer's best hour (confidence {confidence:.2f})"
        elif snap.shop_hour is not None:
            hour, confidence, source = snap.shop_hour, 0.0, "shop"
            reason = "the shop's best hour: no engagement history for this customer"
        else:
            hour, confidence, source = 24 * 1 + 10, 0.0, "default"  # Tuesday 10:00 local
            reason = "no send-time model: Tuesday 10:00 local time"
        send_at = next_local_hour(hour, zone, at)
        return {
            "send_at": send_at.isoformat(timespec="seconds"),
            "hour_of_week": hour,
            "timezone": zone,
            "confidence": round(confidence, 4),
            "source": source,
            "reason": reason,
        }

    def recommend(
        self,
        customer_id: str,
        strategy: str = "personal",
        n: int = 4,
        filters: Filters | None = None,
        campaign: str = "recommend",
    ) -> list[dict[str, Any]]:
        """`n` products: product_id, title, price, currency, image_url, url (UTM), strategy, reason."""
        self._require(customer_id)
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy: unknown {strategy!r}; one of {', '.join(STRATEGIES)}")
        ranked = self._candidates(customer_id, strategy)
        return self._cards(ranked, n, filters or Filters(), campaign, "products")

    def _candidates(self, customer_id: str, strategy: str) -> Iterable[Candidate]:
        snap = self.snapshot
        if strategy == "trending":
            return self._trending
        if strategy == "also_bought":
            anchors = snap.last_order.get(customer_id, [])
            return self._similar(anchors, "also_bought", "bought with {}")
        if strategy == "next_purchase":
            bought = snap.purchased.get(customer_id, frozenset())
            personal = snap.personal.get(customer_id, [])
            return [
                (p, s, "next_purchase", "bought before and due again")
                for p, s, _ in personal
                if p in bought
            ]
        mine = snap.personal.get(customer_id)
        if mine is None:
            why = (
                "recommender unavailable"
                if not snap.status.get("recommender") or not snap.status["recommender"].loaded
                else "no purchase history"
            )
            reason = f"popular: {why}"
            return ((p, s, "trending", reason) for p, s in snap.trending)
        # lazily: a product block reads the first few, and the reason is text made per item
        return ((p, s, st, _personal_reason(st)) for p, s, st in mine)

    def _similar(self, anchors: Sequence[str], strategy: str, reason: str) -> list[Candidate]:
        out: list[Candidate] = []
        for anchor in anchors:
            title = self.snapshot.products.get(anchor)
            name = title.title if title is not None else anchor
            out += [
                (p, s, strategy, reason.format(name))
                for p, s in self.snapshot.similar.get(anchor, [])
            ]
        return sorted(out, key=lambda r: -r[1])

    def _cards(
        self,
        ranked: Iterable[Candidate],
        n: int,
        filters: Filters,
        campaign: str,
        slot: str,
    ) -> list[dict[str, Any]]:
        snap = self.snapshot
        cards: list[dict[str, Any]] = []
        seen: set[str] = set(filters.exclude)
        for product_id, score, strategy, reason in itertools.chain(ranked, self._trending):
            if len(cards) >= n:
                break
            if product_id in seen:
                continue
            product = snap.products.get(product_id)
            if product is None:
                continue
            if filters.in_stock_only and not product.in_stock:
                continue
            if filters.category is not None and product.category != filters.category:
                continue
            if filters.max_price is not None and (
                product.price is None or product.price > filters.max_price
            ):
                continue
            seen.add(product_id)
            # what depends on the product and its place only is made once per snapshot
            key = (product_id, campaign, slot, len(cards) + 1)
            base = self._card_base.get(key)
            if base is None:
                url = product.url or f"{self.shop.url.rstrip('/')}/p/{product_id}"
                base = {
                    "product_id": product_id,
                    "title": product.title,
                    "price": product.price,
                    "currency": self.shop.currency,
                    "image_url": product.image_url,
                    "url": utm(url, campaign, f"{slot}/{len(cards) + 1}"),
                    "category": product.category,
                }
                if len(self._card_base) >= CARD_BASES:
                    self._card_base.clear()
                self._card_base[key] = base
            cards.append(
                {**base, "strategy": strategy, "reason": reason, "score": round(float(score), 6)}
            )
        return cards

    # ---------------------------------------------------------------------------- decisions
    def decide(
        self,
        customer_id: str,
        template: str,
        campaign: str | None = None,
        n: int = 4,
        now: pd.Timestamp | datetime | None = None,
    ) -> dict[str, Any]:
        """The whole decision for one email (see the module docstring)."""
        made, encoded = self._decision(customer_id, template, campaign, n, now)
        return made if made is not None else orjson.loads(encoded.body)

    def decide_encoded(
        self,
        customer_id: str,
        template: str,
        campaign: str | None = None,
        n: int = 4,
        now: pd.Timestamp | datetime | None = None,
    ) -> Encoded:
        """`decide` as JSON: what the service answers, without decoding a retried decision."""
        return self._decision(customer_id, template, campaign, n, now)[1]

    def _decision(
        self,
        customer_id: str,
        template: str,
        campaign: str | None,
        n: int,
        now: pd.Timestamp | datetime | None,
    ) -> tuple[dict[str, Any] | None, Encoded]:
        """The decision made now (None when it was made before) and its JSON, kept for retries."""
        self._require(customer_id)
        if template not in self.renderer.templates():
            raise ValueError(
                f"template: unknown {template!r}; one of {', '.join(self.renderer.templates())}"
            )
        at = _utc_now() if now is None else now
        campaign = campaign or template
        decision_id = make_decision_id(customer_id, campaign, template, at)
        key = (decision_id, n)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return None, cached
        decision = self._decide(customer_id, template, campaign, n, at, decision_id)
        return decision, self._keep(key, decision)

    def _keep(self, key: tuple[str, int], decision: dict[str, Any]) -> Encoded:
        """Cache a decision just made, as JSON, and hand it to `on_decision` (the audit)."""
        # An exact copy: orjson's bytes sit in the buffer it grew while writing (64 KB for a
        # 12 KB decision), and thousands of those, freed in the order they came, made the heap
        # creep (RSS +24 MB over 400,000 decisions; flat with the copy, and 50 MB smaller).
        kept = Encoded(memoryview(encode(decision)).tobytes(), bool(decision["send"]))
        with self._lock:
            self._cache[key] = kept
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        if self.on_decision is not None:
            self.on_decision(decision)
        return kept

    def decide_many(
        self,
        customer_ids: Sequence[str],
        template: str,
        campaign: str | None = None,
        n: int = 4,
        now: pd.Timestamp | datetime | None = None,
        helper: BatchHelper | None = None,
    ) -> list[Encoded | UnknownCustomer]:
        """`decide_encoded` for many customers, in order; an unknown customer is its
        `UnknownCustomer`.

        With a `helper` (a process forked with this decider), the second half of a large batch is
        computed there while this process computes the first: two cores instead of one. The
        helper is given each customer's live segments, so events since the fork count.
        """
        at = _utc_now() if now is None else now
        campaign = campaign or template
        out: list[Encoded | UnknownCustomer] = []
        if helper is None or len(customer_ids) < helper.min_batch:
            for cid in customer_ids:
                try:
                    out.append(self.decide_encoded(cid, template, campaign, n, at))
                except UnknownCustomer as exc:
                    out.append(exc)
            return out
        if template not in self.renderer.templates():
            raise ValueError(f"template: unknown {template!r}")
        half = len(customer_ids) // 2
        remote = [c for c in customer_ids[half:] if self.known(c)]
        jobs = [(c, self.segments(c)) for c in remote]
        future = helper.submit(jobs, template, campaign, n, at)
        out = self.decide_many(customer_ids[:half], template, campaign, n, at)
        computed = dict(zip(remote, future.result(), strict=True))
        for cid in customer_ids[half:]:
            decision = computed.get(cid)
            if decision is None:
                out.append(UnknownCustomer(cid))
                continue
            out.append(self._keep((decision["decision_id"], n), decision))
        return out

    def _decide(
        self,
        customer_id: str,
        template: str,
        campaign: str,
        n: int,
        at: pd.Timestamp | datetime,
        decision_id: str,
        segments: list[str] | None = None,
    ) -> dict[str, Any]:
        snap = self.snapshot
        customer = snap.customers.get(customer_id)
        base: dict[str, Any] = {
            "decision_id": decision_id,
            "customer_id": customer_id,
            "campaign": campaign,
            "template": template,
            "model_versions": self._versions,
            "degraded": self._degraded,
        }
        if customer is None or not customer.email_consent:
            why = "no email consent" if customer is not None else "no customer record, no consent"
            return {**base, "send": False, "reasons": [f"not sent: {why}"], "content": None}
        if segments is None:
            segments = self.segments(customer_id)
        reasons = [f"segments: {', '.join(segments) or 'none'}"]
        ranked, plan = self._plan(customer_id, template)
        products = self._cards(ranked, n, _NO_FILTERS, campaign, "products")
        reasons.append(f"products: {plan}")
        if products:
            reasons.append(f"first product: {products[0]['reason']}")
        send_time = self.send_time(customer_id, at)
        reasons.append(f"send time: {send_time['reason']}")
        scores = self.scores(customer_id)
        if scores["churn"] is None:
            reasons.append("scores: no churn model or no order history, no churn score")
        context = self._context(customer_id, customer.first_name, template, campaign, segments)
        context.update(segments=segments, products=products)
        key = (frozenset(segments), frozenset(context["viewed_categories"]))
        blocks = self._blocks.get(key)
        if blocks is None:
            blocks = select_blocks(self.renderer.rules, context)
            if len(self._blocks) < 10_000:  # a handful of segment mixes in practice
                self._blocks[key] = blocks
        try:
            email = self.renderer.render(template, context, blocks)
        except TemplateError as exc:
            return {
                **base,
                "send": False,
                "segments": segments,
                "reasons": [*reasons, f"not sent: the template failed: {exc}"],
                "content": None,
            }
        chosen = {
            slot: {"block": block.name, "reason": block.reason}
            for slot, block in email.blocks.items()
        }
        reasons += [f"block {slot}: {b['block']} ({b['reason']})" for slot, b in chosen.items()]
        return {
            **base,
            "send": True,
            "segments": segments,
            "products": products,
            "send_time": send_time,
            "scores": scores,
            "content": {
                "subject": email.subject,
                "html": email.html,
                "text": email.text,
                "blocks": chosen,
            },
            "reasons": reasons,
        }

    def _plan(self, customer_id: str, template: str) -> tuple[Iterable[Candidate], str]:
        """The products a template shows first, and how they were chosen."""
        snap = self.snapshot
        if template == "cart_reminder" and snap.cart.get(customer_id):
            cart = snap.cart[customer_id]
            own = [(p, 1.0, "cart", "left in the cart") for p in cart]
            return own + self._similar(
                cart, "also_bought", "goes with {}"
            ), "the cart, then what goes with it"
        if template == "browse_reminder" and snap.viewed.get(customer_id):
            viewed = snap.viewed[customer_id]
            own = [(p, 1.0, "viewed", "viewed recently") for p in viewed]
            return own + self._similar(
                viewed[:1], "also_bought", "similar to {}"
            ), "viewed products, then similar ones"
        if template == "post_purchase" and snap.last_order.get(customer_id):
            bought = snap.purchased.get(customer_id, frozenset())
            ranked = self._similar(snap.last_order[customer_id], "also_bought", "bought with {}")
            return [r for r in ranked if r[0] not in bought], "bought with the last order"
        if template == "welcome":
            return self._candidates(customer_id, "trending"), "popular products"
        if template == "win_back" and snap.personal_new.get(customer_id):
            new = snap.personal_new[customer_id]
            return [
                (p, s, st, f"new for the customer ({st})") for p, s, st in new
            ], "personal, new products"
        return self._candidates(customer_id, "personal"), "personal recommendations"

    def _context(
        self,
        customer_id: str,
        first_name: str | None,
        template: str,
        campaign: str,
        segments: list[str],
    ) -> dict[str, Any]:
        snap = self.snapshot
        token = self._sign(f"unsubscribe|{customer_id}")[:16]
        shop_url = self.shop.url.rstrip("/")
        context: dict[str, Any] = {
            **_CONTEXT_DEFAULTS,  # every field defined: strict previews flag only real misses
            "customer": {"customer_id": customer_id, "first_name": first_name},
            "shop": {"name": self.shop.name, "url": shop_url},
            "campaign": campaign,
            "unsubscribe_url": f"{shop_url}/unsubscribe?c={customer_id}&t={token}",
            "viewed_categories": [],
        }
        viewed = snap.viewed.get(customer_id, [])
        categories = [snap.products[p].category for p in viewed if p in snap.products]
        named = [c for c in categories if c]
        context["viewed_categories"] = sorted({_slug(c) for c in named})
        if named:
            context["category"] = named[0]
        if template in ("cart_reminder", "vip_offer", "win_back"):
            code = self._sign(f"code|{customer_id}|{campaign}")[:8].upper()
            context["discount_code"] = f"{template.split('_')[0].upper()}-{code}"
        if template == "win_back":
            stage = next((d for d in (90, 60, 30) if f"lapsed_{d}d" in segments), 30)
            context["winback_stage"] = stage
            context["discount_percent"] = {30: 10, 60: 15, 90: 20}[stage]
        elif template == "cart_reminder":
            context["discount_percent"] = 10
        elif template == "vip_offer":
            context["discount_percent"] = 20
        return context

    def _sign(self, message: str) -> str:
        # HMAC-SHA256 from a keyed state made once: a copy costs a third of `hmac.new`
        keyed = self._keyed
        if keyed is None or keyed[0] != self.shop.secret:
            keyed = self._keyed = (
                self.shop.secret,
                hmac.new(self.shop.secret.encode(), None, "sha256"),
            )
        mac = keyed[1].copy()
        mac.update(message.encode())
        return mac.hexdigest()


_HELPER_DECIDER: Decider | None = None  # set in the parent just before the helper is forked


def _helper_decide(
    jobs: list[tuple[str, list[str]]], template: str, campaign: str, n: int, at: datetime
) -> list[dict[str, Any]]:
    decider = _HELPER_DECIDER
    assert decider is not None, "the helper process was not forked from a decider"
    return [
        decider._decide(
            cid, template, campaign, n, at, make_decision_id(cid, campaign, template, at), segments
        )
        for cid, segments in jobs
    ]


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """In a forked process: end with the parent, however it ends (SIGKILL included).

    A thread of the child watches its parent id and sends the child `signum` when the parent is
    gone (it was re-parented). Not PR_SET_PDEATHSIG: that fires when the *thread* that forked
    dies, and the batch helper is forked by the thread that built the snapshot, which ends.
    The signal handlers inherited from the server (uvicorn's, which only set a flag of a server
    that does not run here) go back to the defaults, so `kill` ends it too.
    """
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, signal.SIG_DFL)
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os.kill(os.getpid(), signum)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class BatchHelper:
    """A process forked from the serving process, sharing its snapshot pages (copy on write),
    that computes half of each large batch of decisions.

    Forked (not spawned) right after a snapshot is installed and frozen, so nothing is loaded
    twice; a new snapshot needs a new helper (`close` the old one).
    """

    def __init__(self, decider: Decider, min_batch: int = 200) -> None:
        global _HELPER_DECIDER
        self.min_batch = min_batch
        _HELPER_DECIDER = decider
        context = multiprocessing.get_context("fork")
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=context, initializer=die_with_parent
        )
        self._pool.submit(int).result()  # fork now, while this snapshot is the one installed

    def submit(
        self, jobs: list[tuple[str, list[str]]], template: str, campaign: str, n: int, at: Any
    ) -> concurrent.futures.Future[list[dict[str, Any]]]:
        moment = at.to_pydatetime() if isinstance(at, pd.Timestamp) else at
        return self._pool.submit(_helper_decide, jobs, template, campaign, n, moment)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def make_decision_id(
    customer_id: str, campaign: str, template: str, at: pd.Timestamp | datetime
) -> str:
    """Stable id of the decision for this customer, campaign, template and UTC day."""
    day = f"{at.year:04d}-{at.month:02d}-{at.day:02d}"  # strftime costs a µs more
    raw = f"{customer_id}\x1f{campaign}\x1f{template}\x1f{day}".encode()
    return hashlib.sha256(raw).hexdigest()[:24]


def next_local_hour(hour_of_week: int, zone: str, after: pd.Timestamp | datetime) -> datetime:
    """The first start of local hour-of-week `hour_of_week` (0 = Monday 00:00) after `after`.

    `after` is naive UTC; the answer is too. A quiet hour (22:00–06:59 local) moves to 09:00 of
    the same local day. Plain `datetime`, cached `ZoneInfo` and cached wall-clock conversions:
    this runs for every decision.
    """
    day, hour = divmod(int(hour_of_week) % _WEEK, 24)
    start, end = QUIET_HOURS
    if hour >= start or hour < end:
        hour = 9
    moment = after.to_pydatetime() if isinstance(after, pd.Timestamp) else after
    tz = _zone(zone)
    # `tz.fromutc` of the UTC wall time is what `astimezone(tz)` of the UTC moment does, without
    # the detour through `UTC`
    local = tz.fromutc(moment.replace(tzinfo=tz))
    offset = local.utcoffset()
    assert offset is not None
    wall = datetime(local.year, local.month, local.day, hour) + timedelta(
        days=day - local.weekday()
    )
    for _ in range(3):
        # Mostly the offset of now holds at the wall time too: a conversion back checks it (the
        # same offset there gives back the same wall time) and that the wall time is not the
        # second of a repeated hour; else the full way.
        utc = wall - offset
        back = tz.fromutc(utc.replace(tzinfo=tz))
        if back.fold or back.utcoffset() != offset:
            utc = _wall_to_utc(zone, wall)
        if utc > moment:
            return utc
        wall += _ONE_WEEK
    raise AssertionError("a weekly hour always comes within three weeks")


@functools.lru_cache(maxsize=64)
def _personal_reason(strategy: str) -> str:
    return f"personal ({strategy})"


@functools.lru_cache(maxsize=4096)  # wall times around a change of offset
def _wall_to_utc(zone: str, wall: datetime) -> datetime:
    """Naive UTC of local wall time `wall` in `zone`; a wall time skipped by a DST jump does not
    round-trip, and gives the hour after the jump."""
    tz = _zone(zone)
    utc = wall.replace(tzinfo=tz).astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != wall:
        utc = (wall + timedelta(hours=1)).replace(tzinfo=tz).astimezone(UTC)
    return utc.replace(tzinfo=None)


@functools.lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (KeyError, ValueError):
        return ZoneInfo("UTC")


def _utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)  # a pandas Timestamp costs 30 µs more here


@functools.lru_cache(maxsize=4096)  # the catalogue's categories; the import costs µs a call
def _slug(name: str) -> str:
    from personalizer.models.category_propensity import category_slug

    return category_slug(name)
