"""The decision service as a plain ASGI (Starlette) app: what email renderers, shops and marketers call.

Served by BentoML (`personalizer.service`, which mounts this app) or straight by uvicorn
(`personalizer serve --server uvicorn`). The hot paths are plain Starlette handlers answering from
the in-memory `Snapshot` with orjson: no model runs on a request.

Routes (JSON bodies; one customer or `customer_ids` for a batch, see `schemas.py`):

    POST /v1/decide      segments, products, send time, scores, rendered email, decision_id
    POST /v1/recommend   products by strategy (personal, also_bought, next_purchase, trending)
    POST /v1/segments    POST /v1/send_time    POST /v1/scores
    POST /v1/events      batch ingestion (bearer token), memberships updated at once
    POST /v1/reload      rebuild the snapshot from the current champions (bearer token)
    POST /v1/customers/{id}/erase   erase a customer everywhere (bearer token)
    GET  /healthz /readyz /metrics (also under /v1), GET /v1/openapi.json
    GET  /preview        a template rendered for sample customers of every segment

Errors: a bad body is a 400 (unreadable JSON) or 422 (naming each field, the reason and the
value); an unknown customer a 404; a missing or wrong token a 401; nothing is a 500 — an
unexpected failure answers 503 with a message and is logged and counted.
"""

from __future__ import annotations

import atexit
import gc
import hmac
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson
import pandas as pd
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from personalizer.api import schemas
from personalizer.config import Settings
from personalizer.decisions.decider import (
    BatchHelper,
    Decider,
    Filters,
    ShopInfo,
    UnknownCustomer,
    encode,
)
from personalizer.decisions.snapshot import Snapshot, build_snapshot
from personalizer.privacy.decision_audit import DecisionAudit, decision_inputs, fingerprint

log = logging.getLogger(__name__)

TOKEN_ENV = "PERSONALIZER_API_TOKEN"
SECRET_ENV = "PERSONALIZER_SECRET"
RELOAD_ENV = "PERSONALIZER_RELOAD_SECONDS"
TEMPLATES_ENV = "PERSONALIZER_TEMPLATES"  # folders of templates replacing shipped ones
AUDIT_ENV = "PERSONALIZER_DECISION_AUDIT"  # "0": no audit log of decisions
THREADPOOL_BATCH = 200  # batches larger than this run off the event loop
MAX_BODY_ENV = "PERSONALIZER_MAX_BODY_MB"  # larger request bodies are refused (413)
DEFAULT_MAX_BODY_MB = 100.0  # 200,000 events or customer ids in one call fit
_BODY = "personalizer.body"  # the scope key of a body read by `_App` (None: too large)


class JSON(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return encode(content)


class ApiError(Exception):
    """An answer other than 200, with a readable message."""

    def __init__(self, status: int, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.status, self.message, self.detail = status, message, detail


@dataclass
class ServiceState:
    """What the routes share: the decider (swapped on reload), the token, the event feed."""

    settings: Settings
    decider: Decider | None = None
    preview: Decider | None = None
    token: str | None = None
    batch_helper: bool = False  # fork a process that computes half of each large batch
    helper: BatchHelper | None = None
    loading: bool = False
    load_error: str | None = None
    last_seq: int = 0
    reloads: int = 0
    # Forked workers (workers.py): others write to the event store too, so follow its files;
    # and a reload is the master's job.
    shared_store: bool = False
    reload_hook: Callable[[], None] | None = None
    store_token: tuple[int, ...] = ()
    store_files: tuple[str, ...] = ()  # the event store's database and write-ahead log
    audit: Any = None  # this process's DecisionAudit (made after a fork, never shared)
    audit_pid: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        self.requests = Counter(
            "personalizer_requests",
            "Requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "personalizer_request_seconds",
            "Request latency by route",
            ["route"],
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5),
            registry=self.registry,
        )
        self.decisions = Counter(
            "personalizer_decisions", "Decisions by outcome", ["send"], registry=self.registry
        )
        # the labelled children made once: `labels()` costs a µs a request
        self.decided = {send: self.decisions.labels(str(send).lower()) for send in (True, False)}
        self.events = Counter(
            "personalizer_events", "Events by outcome", ["outcome"], registry=self.registry
        )
        self.degraded = Gauge(
            "personalizer_degraded_parts",
            "Parts of the snapshot not loaded",
            registry=self.registry,
        )

    def install(self, snapshot: Snapshot) -> None:
        from personalizer.render import Renderer

        shop = ShopInfo(secret=os.environ.get(SECRET_ENV, "personalizer"))
        if self.decider is None:
            folders = [f for f in os.environ.get(TEMPLATES_ENV, "").split(os.pathsep) if f]
            self.decider = Decider(snapshot, renderer=Renderer(folders), shop=shop)
            if os.environ.get(AUDIT_ENV, "1") != "0":
                self.decider.on_decision = self.record_decision
            self.preview = Decider(snapshot, renderer=Renderer(folders, strict=True), shop=shop)
        else:
            self.decider.swap(snapshot)
            assert self.preview is not None
            self.preview.swap(snapshot, keep_decisions=False)
        self.degraded.set(len(snapshot.degraded))
        # The snapshot is millions of long-lived objects: move them out of the collector's
        # sight, and collect the young generation less often, or full collections scanning
        # them stall requests for hundreds of milliseconds (measured: p99 380 ms → see README).
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        if self.batch_helper:
            self.start_helper()

    def start_helper(self) -> None:
        """Fork the batch helper (a new one for each snapshot)."""
        old, self.helper = self.helper, None
        if old is not None:
            old.close()
        if self.decider is None:
            return
        try:
            self.helper = BatchHelper(self.decider)
        except OSError as exc:  # no fork here: batches use one core
            log.warning("no batch helper process: %s", exc)

    def load(self, as_of: pd.Timestamp | None = None) -> None:
        """Build a snapshot from the current champions and serve it; errors are kept, not raised."""
        with self.lock:
            self.loading = True
        try:
            snapshot = build_snapshot(self.settings, as_of)
            with self.lock:
                self.install(snapshot)
                self.last_seq = 0  # the new memberships have seen no event of the store yet
            self.load_error = None
            self.reloads += 1
            self.catch_up()
        except Exception as exc:  # keep serving the previous snapshot
            log.exception("snapshot build failed")
            self.load_error = f"{type(exc).__name__}: {exc}"
        finally:
            with self.lock:
                self.loading = False

    def start(self) -> None:
        """Build the snapshot in a background thread, then watch the registry for new champions."""
        with self.lock:
            if self.loading or self.decider is not None:
                return
            self.loading = True

        def run() -> None:
            self.load()
            _watch(self)

        threading.Thread(target=run, name="snapshot", daemon=True).start()

    def catch_up(self) -> dict[str, int]:
        """Apply the events the store accepted since the last call to the live memberships."""
        from personalizer.data.event_store import open_event_store, store_path
        from personalizer.segments.incremental import follow

        decider = self.decider
        if decider is None or decider.snapshot.updater is None:
            return {"changes": 0}
        if not store_path(self.settings).exists():
            return {"changes": 0}
        with self.lock, open_event_store(self.settings) as store:
            changes, self.last_seq = follow(store, decider.snapshot.updater, self.last_seq)
        return {"changes": len(changes)}

    def record_decision(self, decision: dict[str, Any]) -> None:
        """Append a decision to the audit log (`privacy.decision_audit`); a failure is logged,
        never the caller's: the decision is still answered."""
        try:
            if self.audit is None or self.audit_pid != os.getpid():
                self.audit, self.audit_pid = DecisionAudit(self.settings), os.getpid()
                atexit.register(self.audit.close)
            self.audit.record(decision, fingerprint(decision_inputs(decision)))
        except Exception:
            log.exception("the decision audit could not record %s", decision.get("decision_id"))

    def sync(self) -> None:
        """With `shared_store`: catch up when the event store's files changed since last time.

        A stat of the database and its write-ahead log (a few µs) on each request, so an event
        taken by another worker counts in the next answer of this one.
        """
        if not self.shared_store:
            return
        if not self.store_files:
            from personalizer.data.event_store import store_path

            path = str(store_path(self.settings))
            self.store_files = (path, path + "-wal")  # as text: a Path costs µs a request
        token: tuple[int, ...] = ()
        for name in self.store_files:
            try:
                info = os.stat(name)
            except FileNotFoundError:
                continue
            token += (info.st_mtime_ns, info.st_size, info.st_ino)
        if token != self.store_token:
            self.catch_up()
            self.store_token = token

    def versions(self) -> dict[str, str | None]:
        return {} if self.decider is None else self.decider.snapshot.versions()


# ------------------------------------------------------------------------------------ plumbing
Handler = Callable[[Request, ServiceState], Awaitable[Any]]


def _route(
    state: ServiceState, name: str, handler: Handler
) -> Callable[[Request], Awaitable[Response]]:
    latency = state.latency.labels(name)  # labelled children made once: a lookup costs µs
    counted: dict[int, Any] = {}

    async def endpoint(request: Request) -> Response:
        started = time.perf_counter()
        try:
            result = await handler(request, state)
            response = result if isinstance(result, Response) else JSON(result)
        except ApiError as exc:
            body = {"error": exc.message}
            if exc.detail is not None:
                body["detail"] = exc.detail
            response = JSON(body, status_code=exc.status)
        except Exception:  # never a 500: say so, log it, count it
            log.exception("%s failed", name)
            response = JSON(
                {"error": "the service failed to answer this request; it has been logged"},
                status_code=503,
            )
        status = response.status_code
        counter = counted.get(status)
        if counter is None:
            counter = counted[status] = state.requests.labels(name, str(status))
        counter.inc()
        latency.observe(time.perf_counter() - started)
        return response

    return endpoint


async def _read_body(receive: Any, limit: int) -> bytes | None:
    """The request body from the ASGI `receive`; None when it exceeds `limit` bytes (the rest is
    not read). Straight from the messages: Starlette's `Request.body` costs µs more a request."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: nothing to answer
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _max_body() -> int:
    raw = os.environ.get(MAX_BODY_ENV, "").strip()
    try:
        megabytes = float(raw) if raw else DEFAULT_MAX_BODY_MB
    except ValueError:
        raise ValueError(f"{MAX_BODY_ENV} must be a number of megabytes, got {raw!r}") from None
    return int(megabytes * 1024 * 1024)


async def _body(request: Request, model: type[schemas._Body]) -> Any:
    scope = request.scope
    limit = getattr(scope.get("app"), "max_body", None) or _max_body()  # the one applied
    raw = scope[_BODY] if _BODY in scope else await _read_body(request.receive, limit)
    if raw is None:
        megabytes = limit / 1024 / 1024
        raise ApiError(413, f"the request body is larger than {megabytes:g} MB ({MAX_BODY_ENV})")
    if not raw:
        raise ApiError(400, "the request needs a JSON body")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(
            422,
            "the body must be a JSON object",
            [{"field": "body", "reason": "not an object", "value": None}],
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = schemas.errors_of(exc)
        first = errors[0]
        raise ApiError(422, f"{first['field']}: {first['reason']}", errors) from None


def _decider(state: ServiceState) -> Decider:
    if state.decider is None:
        raise ApiError(503, "the service is loading its models; retry shortly")
    state.sync()
    return state.decider


def _authorise(request: Request, state: ServiceState) -> None:
    if not state.token:
        raise ApiError(401, f"writes are disabled: no token configured (set {TOKEN_ENV})")
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), state.token.encode()):
        raise ApiError(401, "missing or wrong bearer token")


async def _each(body: schemas.Customers, one: Callable[[str], Any], state: ServiceState) -> Any:
    """One answer, or a batch's answers in order (unknown customers as error entries)."""
    if not body.batch:
        try:
            return one(body.ids[0])
        except UnknownCustomer as exc:
            raise ApiError(404, str(exc)) from None

    def run() -> dict[str, Any]:
        results = []
        for cid in body.ids:
            try:
                results.append(one(cid))
            except UnknownCustomer as exc:
                results.append({"customer_id": cid, "error": str(exc)})
        return {"results": results}

    if len(body.ids) > THREADPOOL_BATCH:
        return await run_in_threadpool(run)
    return run()


def _moment(text: str | None) -> datetime | None:
    """`now` of a request as naive UTC: ISO 8601 read by the standard library (a fraction of a µs),
    other spellings pandas understands read by pandas."""
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        try:
            at = pd.Timestamp(text).to_pydatetime()
        except (ValueError, TypeError, OverflowError):
            raise ApiError(422, f"now: not a timestamp: {text!r}") from None
        if pd.isna(at):  # "NaT", and pandas' other not-a-time spellings
            raise ApiError(422, f"now: not a timestamp: {text!r}") from None
    if at.tzinfo is not None:
        at = at.astimezone(UTC).replace(tzinfo=None)
    return at


# -------------------------------------------------------------------------------------- routes
async def decide(request: Request, state: ServiceState) -> Any:
    body: schemas.DecideRequest = await _body(request, schemas.DecideRequest)
    decider = _decider(state)
    if body.template not in decider.renderer.templates():
        raise ApiError(
            422,
            f"template: unknown {body.template!r}; one of {', '.join(decider.renderer.templates())}",
        )
    at = _moment(body.now)
    if body.batch:

        def run() -> Response:
            answers = decider.decide_many(
                body.ids, body.template, body.campaign, body.n, at, state.helper
            )
            parts: list[bytes] = []
            for cid, answer in zip(body.ids, answers, strict=True):
                if isinstance(answer, UnknownCustomer):
                    parts.append(encode({"customer_id": cid, "error": str(answer)}))
                else:
                    state.decided[answer.send].inc()
                    parts.append(answer.body)
            # the decisions are JSON already (as the decider keeps them): joined, not re-encoded
            return _json_bytes(b'{"results":[' + b",".join(parts) + b"]}")

        return await run_in_threadpool(run) if len(body.ids) > THREADPOOL_BATCH else run()

    def one(cid: str) -> Response:
        answer = decider.decide_encoded(cid, body.template, body.campaign, body.n, at)
        state.decided[answer.send].inc()
        return _json_bytes(answer.body)

    return await _each(body, one, state)


def _json_bytes(body: bytes) -> Response:
    """A 200 whose body is JSON already."""
    return Response(body, media_type="application/json")


async def recommend(request: Request, state: ServiceState) -> Any:
    body: schemas.RecommendRequest = await _body(request, schemas.RecommendRequest)
    decider = _decider(state)
    f = body.filters
    filters = Filters(f.category, f.max_price, f.in_stock_only, frozenset(f.exclude))

    def one(cid: str) -> dict[str, Any]:
        products = decider.recommend(cid, body.strategy, body.n, filters, body.campaign)
        return {"customer_id": cid, "strategy": body.strategy, "products": products}

    return await _each(body, one, state)


async def segments(request: Request, state: ServiceState) -> Any:
    body = await _body(request, schemas.Customers)
    decider = _decider(state)
    return await _each(body, lambda c: {"customer_id": c, "segments": decider.segments(c)}, state)


async def send_time(request: Request, state: ServiceState) -> Any:
    body = await _body(request, schemas.Customers)
    decider = _decider(state)
    return await _each(body, lambda c: {"customer_id": c, **decider.send_time(c)}, state)


async def scores(request: Request, state: ServiceState) -> Any:
    body = await _body(request, schemas.Customers)
    decider = _decider(state)
    return await _each(body, lambda c: {"customer_id": c, **decider.scores(c)}, state)


async def events(request: Request, state: ServiceState) -> Any:
    _authorise(request, state)
    body: schemas.EventsRequest = await _body(request, schemas.EventsRequest)

    def run() -> dict[str, Any]:
        from personalizer.data.event_store import ingest_events, open_event_store
        from personalizer.privacy.pseudonym import ErasedCustomers

        with open_event_store(state.settings) as store:
            result = ingest_events(
                store,
                body.events,
                quarantine_dir=state.settings.quarantine_dir,
                source="api",
                erased=ErasedCustomers(state.settings),
            )
        moved = state.catch_up()
        state.events.labels("accepted").inc(result.accepted)
        state.events.labels("duplicate").inc(result.duplicates)
        state.events.labels("rejected").inc(len(result.rejected))
        return {
            "accepted": result.accepted,
            "duplicates": result.duplicates,
            "rejected": [
                {"row": r.row, "event_id": r.event_id, "reason": r.reason} for r in result.rejected
            ][:100],
            "rejected_total": len(result.rejected),
            "erased": result.erased,
            "membership_changes": moved["changes"],
        }

    return await run_in_threadpool(run)


async def reload(request: Request, state: ServiceState) -> Any:
    _authorise(request, state)
    if state.reload_hook is not None:  # a forked worker: the master reloads and replaces us
        state.reload_hook()
        return JSON({"reloading": True, "models": state.versions()}, status_code=202)
    if state.loading:
        raise ApiError(409, "a reload is already running")
    await run_in_threadpool(state.load)
    if state.load_error:
        raise ApiError(
            503, f"reload failed, still serving the previous snapshot: {state.load_error}"
        )
    return {"reloaded": True, "models": state.versions()}


async def erase(request: Request, state: ServiceState) -> Any:
    """Erase one customer everywhere (`privacy.erasure`), then serve a snapshot without them."""
    _authorise(request, state)
    customer_id = str(request.path_params["customer_id"])

    def run() -> dict[str, Any]:
        from personalizer.privacy.erasure import ErasureBlocked, erase_route_handler

        try:
            return erase_route_handler(state.settings, customer_id)
        except ErasureBlocked as exc:
            raise ApiError(409, str(exc)) from None

    body = await run_in_threadpool(run)
    if state.reload_hook is not None:  # a forked worker: the master reloads and replaces us
        state.reload_hook()
    elif not state.loading:
        await run_in_threadpool(state.load)
    return body


async def healthz(request: Request, state: ServiceState) -> Any:
    return {"status": "ok", "pid": os.getpid()}  # which worker answered (`serve --workers`)


async def readyz(request: Request, state: ServiceState) -> Any:
    decider = state.decider
    if decider is None:
        status = 503
        body: dict[str, Any] = {"ready": False, "loading": state.loading, "error": state.load_error}
        return JSON(body, status_code=status)
    snap = decider.snapshot
    return {
        "ready": True,
        "degraded": snap.degraded,
        "models": {
            name: {"loaded": s.loaded, "version": s.version, "detail": s.detail}
            for name, s in snap.status.items()
        },
        "customers": len(snap.customers),
        "products": len(snap.products),
        "as_of": snap.as_of.isoformat(),
        "snapshot_seconds": round(snap.seconds, 2),
        "reloading": state.loading,
        "last_reload_error": state.load_error,
    }


async def metrics(request: Request, state: ServiceState) -> Any:
    return Response(generate_latest(state.registry), media_type="text/plain; version=0.0.4")


async def openapi(request: Request, state: ServiceState) -> Any:
    return openapi_schema()


def openapi_schema() -> dict[str, Any]:
    """OpenAPI 3.1 description of the JSON routes (used by clients and the fuzz test)."""
    bodies: dict[str, type[BaseModel]] = {
        "/v1/decide": schemas.DecideRequest,
        "/v1/recommend": schemas.RecommendRequest,
        "/v1/segments": schemas.Customers,
        "/v1/send_time": schemas.Customers,
        "/v1/scores": schemas.Customers,
        "/v1/events": schemas.EventsRequest,
    }
    paths: dict[str, Any] = {}
    for path, model in bodies.items():
        paths[path] = {
            "post": {
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": model.model_json_schema()}},
                },
                "responses": {
                    "200": {"description": "the answer"},
                    "400": {"description": "unreadable body"},
                    "401": {"description": "missing or wrong token (writes)"},
                    "404": {"description": "unknown customer"},
                    "413": {"description": "body too large"},
                    "422": {"description": "invalid field, named in the message"},
                },
            }
        }
    for path in ("/healthz", "/readyz", "/metrics"):
        paths[path] = {"get": {"responses": {"200": {"description": "ok"}}}}
    paths["/v1/customers/{customer_id}/erase"] = {
        "post": {
            "parameters": [
                {
                    "name": "customer_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                }
            ],
            "responses": {
                "200": {"description": "erased: what was removed from each store"},
                "401": {"description": "missing or wrong token"},
                "409": {"description": "the warehouse is locked by another writer"},
            },
        }
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "personalizer decision service", "version": "1"},
        "paths": paths,
    }


# ---------------------------------------------------------------------------------------- app
def create_app(
    settings: Settings | None = None,
    *,
    snapshot: Snapshot | None = None,
    token: str | None = None,
    load: Literal["background", "now", "later"] = "background",
    batch_helper: bool = False,
) -> Starlette:
    """The service app; it builds its snapshot at startup unless one is given.

    Args:
        settings: the data home (default: from the environment).
        snapshot: serve this snapshot (tests); None builds one from the champions.
        token: bearer token of the write routes (default: `PERSONALIZER_API_TOKEN`; none: writes
            are refused).
        load: "background" builds the snapshot in a thread, so /healthz answers at once and
            /readyz says 503 until it is there; "now" builds it before the app is returned;
            "later" waits for `app.state.service.start()` (the BentoML service calls it in its
            worker, so importing the module stays cheap).
        batch_helper: fork a helper process, sharing the snapshot's memory, that computes half of
            each batch of decisions of 200 customers or more (two cores instead of one).
    """
    from personalizer.api.preview import preview, preview_email

    state = ServiceState(settings or Settings.from_env(), batch_helper=batch_helper)
    state.token = token if token is not None else os.environ.get(TOKEN_ENV) or None
    if snapshot is not None:
        state.install(snapshot)
    elif load == "background":
        state.start()
    elif load == "now":
        state.load()
        _watch(state)
    handlers: dict[str, tuple[Handler, list[str]]] = {
        "/v1/decide": (decide, ["POST"]),
        "/v1/recommend": (recommend, ["POST"]),
        "/v1/segments": (segments, ["POST"]),
        "/v1/send_time": (send_time, ["POST"]),
        "/v1/scores": (scores, ["POST"]),
        "/v1/events": (events, ["POST"]),
        "/v1/reload": (reload, ["POST"]),
        "/v1/customers/{customer_id}/erase": (erase, ["POST"]),
        "/v1/openapi.json": (openapi, ["GET"]),
        "/preview": (preview, ["GET"]),
        "/preview/email": (preview_email, ["GET"]),
    }
    for name, handler in (("healthz", healthz), ("readyz", readyz), ("metrics", metrics)):
        handlers[f"/{name}"] = (handler, ["GET"])
        handlers[f"/v1/{name}"] = (handler, ["GET"])
    endpoints = {
        path: _route(state, path.removeprefix("/v1/").strip("/"), handler)
        for path, (handler, _) in handlers.items()
    }
    routes = [Route(path, endpoints[path], methods=m) for path, (_, m) in handlers.items()]
    app = _App(routes=routes)
    app.fast = {
        (method, path): endpoints[path]
        for path, (_, methods) in handlers.items()
        if "{" not in path
        for method in methods
    }
    app.max_body = _max_body()
    app.state.service = state
    return app


class _App(Starlette):
    """Starlette, with the fixed-path routes answered before its middleware and router.

    The endpoints (`_route`) turn every failure into an answer themselves, so Starlette's error
    middleware and the route matching (a regex a route until one fits) only cost time on the hot
    paths: about 8 µs a request. Other methods and paths go through Starlette as usual.
    """

    fast: dict[tuple[str, str], Callable[[Request], Awaitable[Response]]]
    max_body: int

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            endpoint = self.fast.get((scope["method"], scope["path"]))
            if endpoint is not None:
                scope["app"] = self
                if scope["method"] == "POST":
                    scope[_BODY] = await _read_body(receive, self.max_body)
                response = await endpoint(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _watch(state: ServiceState) -> None:
    """Reload when a champion changes, checked every `PERSONALIZER_RELOAD_SECONDS` (0: never)."""
    seconds = float(os.environ.get(RELOAD_ENV, "60") or 0)
    if seconds <= 0:
        return

    def loop() -> None:
        while True:
            time.sleep(seconds)
            if not state.loading and champions_changed(state):
                state.load()

    threading.Thread(target=loop, name="champion-watch", daemon=True).start()


def champions_changed(state: ServiceState) -> bool:
    """Whether a registered champion differs from the one the snapshot serves."""
    from personalizer import tracking

    if state.decider is None:
        return False
    current = state.versions()
    latest: dict[str, str | None] = {}
    for name in current:
        if name == "segments":
            continue
        try:
            latest[name] = str(tracking.champion_version(state.settings, name).version)
        except Exception:  # no champion, or a registry that cannot be read
            latest[name] = current.get(name)
    changed = any(latest[n] != current.get(n) for n in latest)
    if changed:
        log.info("a champion changed (%s → %s): reloading", current, latest)
    return changed
