"""The decision service over HTTP (Starlette test client): decisions, batches, errors, events, reload.

A 600-customer synthetic shop is imported and the recommender, churn and send-time models are
trained through the command line; the engagement and category models are left untrained, so the
service runs degraded for them and must say so.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlparse

import httpx
import pandas as pd
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from conftest import invoke
from personalizer import tracking
from personalizer.api.app import create_app, openapi_schema
from personalizer.config import Settings
from personalizer.data.warehouse import Warehouse
from personalizer.decisions.decider import make_decision_id, next_local_hour

TOKEN = "s3cret-token"
NOW = "2026-11-02T12:00:00"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("service") / "home"
    invoke(home, "data", "generate", "--customers", "600", "--seed", "9")
    invoke(home, "data", "import", str(home / "synthetic"))
    for model in ("recommender", "churn", "send-time"):
        invoke(home, "train", model)
    return home


@pytest.fixture(scope="module")
def client(home: Path) -> TestClient:
    app = create_app(Settings(home=home), token=TOKEN, load="now")
    return TestClient(app)


@pytest.fixture(scope="module")
def customers(home: Path) -> pd.DataFrame:
    with Warehouse(Settings(home=home).warehouse_path, read_only=True) as wh:
        return wh.query(
            "SELECT c.customer_id, c.email_consent, count(o.order_id) AS lines FROM customers c "
            "LEFT JOIN orders o USING (customer_id) GROUP BY 1, 2 ORDER BY 1"
        )


def cart_event(event_id: str, customer_id: str, product_id: str) -> dict[str, str]:
    """An add_to_cart five hours ago: past the cart abandoners' 4-hour delay, with no purchase."""
    occurred = pd.Timestamp.now("UTC") - pd.Timedelta(hours=5)
    return {
        "event_id": event_id,
        "customer_id": customer_id,
        "type": "add_to_cart",
        "occurred_at": occurred.isoformat(),
        "product_id": product_id,
    }


def consenting_buyer(customers: pd.DataFrame) -> str:
    chosen = customers[customers["email_consent"] & (customers["lines"] > 3)]
    return str(chosen["customer_id"].iloc[0])


# ------------------------------------------------------------------------------------ decide
def test_a_decision_has_everything_an_email_needs(
    client: TestClient, customers: pd.DataFrame
) -> None:
    cid = consenting_buyer(customers)
    response = client.post(
        "/v1/decide",
        json={"customer_id": cid, "template": "vip_offer", "campaign": "xmas", "now": NOW},
    )
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["send"] is True
    assert decision["decision_id"] == make_decision_id(cid, "xmas", "vip_offer", pd.Timestamp(NOW))
    assert len(decision["products"]) == 4
    for product in decision["products"]:
        assert {"product_id", "title", "price", "image_url", "url", "strategy", "reason"} <= set(
            product
        )
        query = parse_qs(urlparse(product["url"]).query)
        assert query["utm_campaign"] == ["xmas"]
        assert query["utm_medium"] == ["email"]
    assert decision["segments"], "a buyer is in some segment"
    send = decision["send_time"]
    assert pd.Timestamp(send["send_at"]) > pd.Timestamp(NOW)
    assert send["source"] in ("customer", "shop")
    assert decision["scores"]["churn"]["reasons"]
    assert decision["scores"]["engagement"] is None  # not trained here: said, not invented
    content = decision["content"]
    assert content["subject"]
    assert content["text"]
    assert "utm_campaign=xmas" in content["html"]
    assert "unsubscribe" in content["html"].lower()
    assert "<" not in content["text"]
    assert set(decision["model_versions"]) >= {"recommender", "churn", "send_time"}
    assert any("engagement" in part for part in decision["degraded"])
    assert any(reason.startswith("products:") for reason in decision["reasons"])


def test_decisions_are_idempotent_per_customer_campaign_and_day(
    client: TestClient, customers: pd.DataFrame
) -> None:
    cid = consenting_buyer(customers)
    body = {"customer_id": cid, "template": "win_back", "campaign": "winter", "now": NOW}
    first, again = (client.post("/v1/decide", json=body).json() for _ in range(2))
    assert first == again
    next_day = client.post("/v1/decide", json={**body, "now": "2026-11-03T12:00:00"}).json()
    assert next_day["decision_id"] != first["decision_id"]


def test_a_retry_gets_the_decision_it_was_given_after_events_change_the_customer(
    client: TestClient, customers: pd.DataFrame
) -> None:
    buyers = customers[customers["email_consent"] & (customers["lines"] > 3)]
    cid = str(buyers["customer_id"].iloc[1])
    body = {"customer_id": cid, "template": "cart_reminder", "campaign": "retry", "now": NOW}
    first = client.post("/v1/decide", json=body)
    assert "cart_abandoner" not in first.json()["segments"]
    cart = cart_event(f"retry-cart-{cid}", cid, "p00002")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/v1/events", json={"events": [cart]}, headers=auth).json()["accepted"] == 1
    # the same customer, campaign and day: the decision already given, byte for byte, alone or
    # in a batch, though the cart has made the customer a cart abandoner since
    again = client.post("/v1/decide", json=body)
    batch = client.post("/v1/decide", json={**body, "customer_ids": [cid], "customer_id": None})
    assert again.content == first.content
    assert batch.json()["results"] == [first.json()]
    other_campaign = client.post("/v1/decide", json={**body, "campaign": "retry-2"}).json()
    assert "cart_abandoner" in other_campaign["segments"]
    # in Python: a retried decision is a new dict, so a caller changing it changes no other
    decider = client.app.state.service.decider  # type: ignore[attr-defined]
    mine = decider.decide(cid, "cart_reminder", "retry", 4, pd.Timestamp(NOW))
    assert mine == first.json()
    mine["segments"].append("changed by the caller")
    assert decider.decide(cid, "cart_reminder", "retry", 4, pd.Timestamp(NOW)) == first.json()


def test_customers_without_consent_get_no_content(
    client: TestClient, customers: pd.DataFrame
) -> None:
    cid = str(customers.loc[~customers["email_consent"], "customer_id"].iloc[0])
    decision = client.post("/v1/decide", json={"customer_id": cid, "template": "welcome"}).json()
    assert decision["send"] is False
    assert decision["content"] is None
    assert "products" not in decision
    assert "consent" in decision["reasons"][0]


def test_a_batch_of_decisions_answers_in_order_with_unknown_customers_marked(
    client: TestClient, customers: pd.DataFrame
) -> None:
    ids = customers["customer_id"].astype(str).head(50).tolist()
    response = client.post(
        "/v1/decide", json={"customer_ids": [*ids, "nobody"], "template": "welcome"}
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["customer_id"] for r in results] == [*ids, "nobody"]
    assert "unknown customer" in results[-1]["error"]
    sent = [r for r in results[:-1] if r["send"]]
    assert len(sent) == int(customers.head(50)["email_consent"].sum())


# ----------------------------------------------------------------------------- other routes
@pytest.mark.parametrize("strategy", ["personal", "also_bought", "next_purchase", "trending"])
def test_every_recommendation_strategy_answers_with_products(
    client: TestClient, customers: pd.DataFrame, strategy: str
) -> None:
    cid = consenting_buyer(customers)
    body = {"customer_id": cid, "strategy": strategy, "n": 3, "filters": {"max_price": 50}}
    products = client.post("/v1/recommend", json=body).json()["products"]
    assert len(products) == 3
    assert all(p["price"] is not None and p["price"] <= 50 for p in products)
    assert len({p["product_id"] for p in products}) == 3


def test_segments_send_time_and_scores_answer_for_one_or_many(
    client: TestClient, customers: pd.DataFrame
) -> None:
    ids = customers["customer_id"].astype(str).head(5).tolist()
    for route in ("segments", "send_time", "scores"):
        one = client.post(f"/v1/{route}", json={"customer_id": ids[0]})
        assert one.status_code == 200, (route, one.text)
        many = client.post(f"/v1/{route}", json={"customer_ids": ids}).json()["results"]
        assert [r["customer_id"] for r in many] == ids
        assert many[0] == one.json()


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        ({"customer_id": "c1", "template": "welcome", "n": 99}, 422, "n"),
        ({"template": "welcome"}, 422, "customer_id"),
        ({"customer_id": "c1", "customer_ids": ["c2"], "template": "welcome"}, 422, "customer_id"),
        ({"customer_id": "c1", "template": "no_such_email"}, 422, "template"),
        ({"customer_id": "c1", "template": "welcome", "colour": "red"}, 422, "colour"),
        ({"customer_id": "nobody-at-all", "template": "welcome"}, 404, "customer_id"),
        ({"customer_id": "c1", "template": "welcome", "now": "yesterday-ish"}, 422, "now"),
        ({"customer_id": "c1", "template": "welcome", "now": "NaT"}, 422, "now"),
        ({"customer_id": "c1", "template": "welcome", "campaign": "a b<c>"}, 422, "campaign"),
    ],
)
def test_bad_requests_get_a_4xx_naming_the_field(
    client: TestClient, body: dict[str, object], status: int, names: str
) -> None:
    response = client.post("/v1/decide", json=body)
    assert response.status_code == status, response.text
    assert names in response.json()["error"]


def test_unreadable_bodies_are_400s(client: TestClient) -> None:
    for raw in (b"{not json", b"", b"\xff\xfe\x00", b'{"customer_id": NaN}'):
        response = client.post("/v1/decide", content=raw)
        assert response.status_code == 400, raw
    assert client.post("/v1/decide", content=b"[1, 2]").status_code == 422


def test_a_body_over_the_size_limit_is_a_413(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSONALIZER_MAX_BODY_MB", "0.001")  # about 1 KB
    state = client.app.state.service  # type: ignore[attr-defined]
    small = TestClient(create_app(state.settings, snapshot=state.decider.snapshot))
    ids = [f"C{i:06d}" for i in range(200)]
    response = small.post("/v1/segments", json={"customer_ids": ids})
    assert response.status_code == 413, response.text
    assert "PERSONALIZER_MAX_BODY_MB" in response.json()["error"]
    assert small.post("/v1/segments", json={"customer_ids": ids[:3]}).status_code == 200


# --------------------------------------------------------------------------------- events
def test_events_need_the_token_and_update_memberships_at_once(
    client: TestClient, customers: pd.DataFrame
) -> None:
    cid = consenting_buyer(customers)
    cart = cart_event(f"cart-{cid}", cid, "p00001")
    assert client.post("/v1/events", json={"events": [cart]}).status_code == 401
    wrong = {"Authorization": "Bearer nope"}
    assert client.post("/v1/events", json={"events": [cart]}, headers=wrong).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    bad = {**cart, "event_id": "bad-1", "type": "teleport"}
    answer = client.post("/v1/events", json={"events": [cart, bad]}, headers=auth).json()
    assert answer["accepted"] == 1
    assert answer["rejected"][0]["reason"].startswith("type:")
    segments = client.post("/v1/segments", json={"customer_id": cid}).json()["segments"]
    assert "cart_abandoner" in segments  # added 5 hours ago, no purchase since: over the 4 h delay
    again = client.post("/v1/events", json={"events": [cart]}, headers=auth).json()
    assert again["accepted"] == 0
    assert again["duplicates"] == 1


# ------------------------------------------------------------------------ health and reload
def test_readyz_lists_models_versions_and_what_is_degraded(client: TestClient) -> None:
    ready = client.get("/readyz").json()
    assert ready["ready"] is True
    models = ready["models"]
    assert models["recommender"]["loaded"]
    assert models["recommender"]["version"] == "1"
    assert not models["engagement"]["loaded"]
    assert any(part.startswith("engagement") for part in ready["degraded"])
    assert client.get("/v1/healthz").json()["status"] == "ok"
    metrics = client.get("/metrics").text
    assert 'personalizer_requests_total{route="readyz",status="200"}' in metrics


def test_a_reload_picks_up_a_new_champion_without_a_restart(
    home: Path, customers: pd.DataFrame
) -> None:
    app = create_app(Settings(home=home), token=TOKEN, load="now")
    client = TestClient(app)
    before = client.get("/readyz").json()["models"]["categories"]
    assert not before["loaded"]
    cid = consenting_buyer(customers)
    retried = {"customer_id": cid, "template": "win_back", "campaign": "reload", "now": NOW}
    given = client.post("/v1/decide", json=retried).json()
    cart = cart_event(f"reload-cart-{cid}", cid, "p00003")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/v1/events", json={"events": [cart]}, headers=auth).status_code == 200
    invoke(home, "train", "categories")
    assert client.post("/v1/reload").status_code == 401
    response = client.post("/v1/reload", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    after = client.get("/readyz").json()["models"]["categories"]
    assert after["loaded"]
    assert after["version"] == "1"
    # a renderer retrying across the reload gets the decision it was given
    assert client.post("/v1/decide", json=retried).json() == given
    assert given["model_versions"]["categories"] is None
    # the events stored before the reload still count
    segments = client.post("/v1/segments", json={"customer_id": cid}).json()["segments"]
    assert "cart_abandoner" in segments


def test_a_corrupt_model_and_an_empty_home_degrade_without_failing(
    home: Path, tmp_path: Path, customers: pd.DataFrame
) -> None:
    engine = tracking.champion_engine_dir(Settings(home=home), "recommender")
    backup = tmp_path / "engine"
    shutil.copytree(engine, backup)
    try:
        for file in engine.rglob("*"):
            if file.is_file():
                file.write_bytes(b"\x00garbage")
        client = TestClient(create_app(Settings(home=home), token=TOKEN, load="now"))
    finally:
        shutil.rmtree(engine)
        shutil.copytree(backup, engine)
    ready = client.get("/readyz").json()
    assert ready["ready"]
    assert not ready["models"]["recommender"]["loaded"]
    assert "failed to load" in ready["models"]["recommender"]["detail"]
    cid = consenting_buyer(customers)
    decision = client.post("/v1/decide", json={"customer_id": cid, "template": "vip_offer"})
    assert decision.status_code == 200
    assert all(p["strategy"] == "trending" for p in decision.json()["products"])
    assert any("recommender" in part for part in decision.json()["degraded"])

    empty = TestClient(create_app(Settings(home=tmp_path / "empty"), load="now"))
    assert empty.get("/readyz").json()["degraded"][0].startswith("warehouse")
    response = empty.post("/v1/decide", json={"customer_id": "c0000001", "template": "welcome"})
    assert response.status_code == 404


def test_a_template_reaching_for_python_internals_fails_safely(
    home: Path, tmp_path: Path, customers: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    (folder / "welcome.subject.j2").write_text("Hello")
    (folder / "welcome.txt.j2").write_text("{{ unsubscribe_url }}")
    (folder / "welcome.html.j2").write_text(
        "{{ ''.__class__.__mro__[1].__subclasses__() }} {{ unsubscribe_url }}"
    )
    monkeypatch.setenv("PERSONALIZER_TEMPLATES", str(folder))
    client = TestClient(create_app(Settings(home=home), load="now"))
    cid = consenting_buyer(customers)
    response = client.post("/v1/decide", json={"customer_id": cid, "template": "welcome"})
    assert response.status_code == 200
    decision = response.json()
    assert decision["send"] is False
    assert decision["content"] is None
    assert "template failed" in decision["reasons"][-1]
    assert "subclasses" not in response.text or "unsafe" in response.text


# ----------------------------------------------------------------------------------- units
@pytest.mark.parametrize(
    ("hour", "zone", "after", "expected"),
    [
        (34, "Europe/Madrid", "2026-11-29 18:00", "2026-12-01 09:00"),  # Tue 10:00 CET
        (153, "Europe/Madrid", "2026-03-28 12:00", "2026-03-29 07:00"),  # Sun 09:00 CEST (DST)
        (10, "America/New_York", "2026-11-30 15:30", "2026-12-07 15:00"),  # passed: next week
        (23, "UTC", "2026-11-30 00:00", "2026-11-30 09:00"),  # quiet 23:00 moves to 09:00
        (10, "Not/AZone", "2026-11-30 09:00", "2026-11-30 10:00"),  # unknown zone: UTC
    ],
)
def test_the_next_local_hour(hour: int, zone: str, after: str, expected: str) -> None:
    assert next_local_hour(hour, zone, pd.Timestamp(after)) == pd.Timestamp(expected)


# ------------------------------------------------------------------------------------ fuzz
ANY_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def _value(
    spec: dict[str, object], defs: dict[str, object], known: list[str]
) -> st.SearchStrategy[object]:
    """Values of one JSON-schema property: its declared type(s), real ids, and anything."""
    if "$ref" in spec:
        return _object(defs[str(spec["$ref"]).rsplit("/", 1)[-1]], defs, known)  # type: ignore[arg-type]
    options = spec.get("anyOf", [spec])
    out: list[st.SearchStrategy[object]] = [ANY_JSON]
    for option in options:  # type: ignore[union-attr]
        kind = option.get("type")
        if kind == "string":
            out += [st.text(max_size=40), st.sampled_from(known)]
        elif kind == "integer":
            out.append(st.integers(-3, 200))
        elif kind == "number":
            out.append(st.floats(-10, 1e6, allow_nan=False))
        elif kind == "boolean":
            out.append(st.booleans())
        elif kind == "array":
            items = option.get("items", {})
            out.append(st.lists(_value(items, defs, known), max_size=5))
        elif kind == "object" or "$ref" in option:
            out.append(
                _value(option, defs, known) if "$ref" in option else _object(option, defs, known)
            )
    return st.one_of(out)


def _object(
    schema: dict[str, object], defs: dict[str, object], known: list[str]
) -> st.SearchStrategy[object]:
    properties: dict[str, dict[str, object]] = schema.get("properties", {})  # type: ignore[assignment]
    return st.fixed_dictionaries(
        {},
        optional={
            **{name: _value(spec, defs, known) for name, spec in properties.items()},
            "unexpected": ANY_JSON,
        },
    )


@pytest.mark.parametrize("path", list(openapi_schema()["paths"]))
def test_fuzzing_every_route_from_its_openapi_schema_never_gives_a_5xx(
    client: TestClient, customers: pd.DataFrame, path: str
) -> None:
    operation = openapi_schema()["paths"][path]
    if "get" in operation:
        assert client.get(path).status_code < 500
        return
    if "parameters" in operation["post"]:  # the erasure: any id, no token (one erasure below)

        @settings(max_examples=30, deadline=None)
        @given(value=st.text(min_size=1, max_size=80))
        def check_path(value: str) -> None:
            url = path.replace("{customer_id}", quote(value, safe=""))
            assert client.post(url).status_code < 500

        check_path()
        return
    schema = operation["post"]["requestBody"]["content"]["application/json"]["schema"]
    known = [*customers["customer_id"].astype(str).head(20), "welcome", "vip_offer", "personal"]
    bodies = _object(schema, schema.get("$defs", {}), known) | ANY_JSON
    auth = {"Authorization": f"Bearer {TOKEN}"} if path == "/v1/events" else {}
    seen: list[int] = []

    @settings(
        max_examples=60,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(body=bodies)
    def check(body: object) -> None:
        response = client.post(path, json=body, headers=auth)
        seen.append(response.status_code)
        assert response.status_code < 500, (body, response.text)
        assert response.headers["content-type"].startswith("application/json")

    check()
    assert len(seen) >= 30
    assert any(400 <= s < 500 for s in seen)  # the fuzzer reached the validation


# --------------------------------------------------------------------------------- preview
@pytest.fixture(scope="module")
def server(home: Path) -> Iterator[str]:
    """The service on a real port (uvicorn in a thread), for the browser."""
    app = create_app(Settings(home=home), token=TOKEN, load="now")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is needed for the browser tests: `make test` installs it")
    return path


def test_the_preview_page_shows_every_segment_at_desktop_and_mobile_width(
    server: str, customers: pd.DataFrame, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    ids = list(customers["customer_id"].astype(str))
    answer = httpx.post(f"{server}/v1/segments", json={"customer_ids": ids}, timeout=30).json()
    segments = {s for r in answer["results"] for s in r["segments"]}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{server}/preview?template=browse_reminder")
        sections = page.locator("section.sample")
        shown = {sections.nth(i).get_attribute("data-segment") for i in range(sections.count())}
        assert shown, "no sample customer"
        assert shown <= segments
        assert len(shown) >= len(segments) - 3  # segments without a consenting member are absent
        first = sections.nth(0)
        desktop, mobile = first.locator("iframe.desktop"), first.locator("iframe.mobile")
        assert desktop.bounding_box()["width"] == pytest.approx(800, abs=2)
        assert mobile.bounding_box()["width"] == pytest.approx(375, abs=2)
        # the layouts differ: two products a row on the desktop, one a row on the phone
        rows = []
        for shown_in in (desktop, mobile):
            cards = shown_in.content_frame.locator("td.product")
            assert cards.count() >= 2
            rows.append(cards.nth(0).bounding_box()["y"] == cards.nth(1).bounding_box()["y"])
        assert rows == [True, False]
        frame = desktop.content_frame
        assert "utm_campaign=preview" in (frame.locator("a").first.get_attribute("href") or "")
        assert "Shop" in frame.locator("body").inner_text()
        assert first.locator("ul.reasons li").count() >= 3
        page.select_option("#template", "win_back")
        page.click("button[type=submit]")
        page.wait_for_url("**template=win_back")
        assert page.locator("section.sample").count() == len(shown)
        page.screenshot(path=str(tmp_path / "preview.png"), full_page=False)
        assert (tmp_path / "preview.png").stat().st_size > 10_000
        assert not errors
        browser.close()


def test_a_helper_process_computes_half_of_a_large_batch_with_the_same_answers(
    home: Path, customers: pd.DataFrame
) -> None:
    with_helper = create_app(Settings(home=home), token=TOKEN, load="now", batch_helper=True)
    state = with_helper.state.service
    assert state.helper is not None
    helped_client = TestClient(with_helper)
    ids = [*customers["customer_id"].astype(str).head(300), "nobody"]
    # an event after the helper was forked: its customer, in the helper's half, must see it
    late = str(customers.head(300)[customers.head(300)["email_consent"]]["customer_id"].iloc[-1])
    assert ids.index(late) >= len(ids) // 2
    cart = cart_event(f"late-cart-{late}", late, "p00002")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert (
        helped_client.post("/v1/events", json={"events": [cart]}, headers=auth).json()["accepted"]
        == 1
    )
    body = {"customer_ids": ids, "template": "cart_reminder", "campaign": "split", "now": NOW}
    helped = helped_client.post("/v1/decide", json=body).json()["results"]
    decision = next(r for r in helped if r["customer_id"] == late)
    assert "cart_abandoner" in decision["segments"]
    assert "unknown customer" in helped[-1]["error"]
    # the same answers as one process alone (built after the event, so it knows it too)
    alone = TestClient(create_app(Settings(home=home), load="now")).post("/v1/decide", json=body)
    assert helped == alone.json()["results"]
    state.helper.close()


def test_the_helper_process_ends_when_the_service_is_killed(home: Path) -> None:
    code = (
        "import os, sys, time\n"
        "from personalizer.api.app import create_app\n"
        "from personalizer.config import Settings\n"
        # as `personalizer serve` does: the snapshot (and the helper) made in a thread that ends
        f"app = create_app(Settings(home={str(home)!r}), load='background', batch_helper=True)\n"
        "state = app.state.service\n"
        "while state.helper is None:\n"
        "    time.sleep(0.1)\n"
        "time.sleep(1)\n"
        "print(os.getpid(), flush=True)\n"
        "time.sleep(120)\n"
    )
    service = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(service.stdout.readline())  # type: ignore[union-attr]
        helpers = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        kids = [int(k) for k in helpers.stdout.split() if _running(int(k))]
        assert kids, "no helper process alive (forked, and still there once the thread ended)"
    finally:
        service.kill()  # SIGKILL: no atexit, no executor shutdown
        service.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_running(k) for k in kids):
        time.sleep(0.1)
    assert not any(_running(k) for k in kids)


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except FileNotFoundError:
        return False
    return state != "Z"


# ------------------------------------------------------------------------- forked workers
@pytest.fixture(scope="module")
def workers(home: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`personalizer serve --workers 2` on a real port: a master and two forked workers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "PERSONALIZER_API_TOKEN": TOKEN, "PERSONALIZER_RELOAD_SECONDS": "0"}
    command = [sys.executable, "-m", "personalizer", "serve", "--workers", "2"]
    master = subprocess.Popen(
        [*command, "--port", str(port), "--home", str(home)], env=env, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/readyz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        master.kill()
        pytest.fail("the workers never became ready")
    yield base, master
    if master.poll() is None:
        master.kill()
        master.wait()


def worker_pids(master: subprocess.Popen[bytes]) -> set[int]:
    out = subprocess.run(["pgrep", "-P", str(master.pid)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


def answered_by(base: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
    """One new connection: the pid of the worker that took it, and its answer to `body`."""
    with httpx.Client(base_url=base, timeout=10) as conn:
        pid = conn.get("/healthz").json()["pid"]
        return pid, conn.post(path, json=body).json()


def test_workers_share_the_snapshot_and_see_each_others_events(
    workers: tuple[str, subprocess.Popen[bytes]], customers: pd.DataFrame
) -> None:
    base, master = workers
    pids = worker_pids(master)
    assert len(pids) >= 2  # two workers (and, on two cores, their batch helpers below them)
    chosen = customers[customers["email_consent"] & (customers["lines"] > 3)]
    cid = str(chosen["customer_id"].iloc[5])
    before = [answered_by(base, "/v1/segments", {"customer_id": cid}) for _ in range(3)]
    assert all("cart_abandoner" not in answer["segments"] for _, answer in before)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    cart = cart_event(f"workers-cart-{cid}", cid, "p00003")
    posted = httpx.post(base + "/v1/events", json={"events": [cart]}, headers=auth, timeout=30)
    assert posted.json()["accepted"] == 1
    seen: set[int] = set()
    for _ in range(40):  # new connections land on either worker
        pid, answer = answered_by(base, "/v1/segments", {"customer_id": cid})
        assert "cart_abandoner" in answer["segments"], pid
        seen.add(pid)
        if len(seen) == 2:
            break
    assert len(seen) == 2, "every connection went to one worker"


def test_a_dead_worker_is_replaced_and_a_reload_replaces_them_all(
    workers: tuple[str, subprocess.Popen[bytes]],
) -> None:
    base, master = workers
    serving = {httpx.get(base + "/healthz", timeout=10).json()["pid"] for _ in range(20)}
    victim = next(iter(serving))
    os.kill(victim, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (
        victim in worker_pids(master) or len(worker_pids(master) - {victim}) < len(serving)
    ):
        time.sleep(0.2)
    assert httpx.get(base + "/readyz", timeout=10).status_code == 200
    before = worker_pids(master)
    assert victim not in before
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.post(base + "/v1/reload", timeout=10).status_code == 401
    response = httpx.post(base + "/v1/reload", headers=auth, timeout=10)
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and worker_pids(master) & before:
        time.sleep(0.5)
    assert not worker_pids(master) & before, "the old workers are still there"
    assert httpx.get(base + "/readyz", timeout=10).json()["ready"] is True


def test_stopping_the_master_stops_every_worker(
    workers: tuple[str, subprocess.Popen[bytes]],
) -> None:
    _, master = workers
    pids = worker_pids(master)
    assert pids
    master.send_signal(signal.SIGTERM)
    master.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.1)
    assert not [p for p in pids if Path(f"/proc/{p}").exists()]


def test_erasing_a_customer_needs_the_token_and_removes_them_from_the_service(
    client: TestClient, customers: pd.DataFrame
) -> None:
    cid = str(
        customers[customers["email_consent"] & (customers["lines"] > 3)]["customer_id"].iloc[9]
    )
    assert client.post("/v1/segments", json={"customer_id": cid}).status_code == 200
    assert client.post(f"/v1/customers/{cid}/erase").status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    response = client.post(f"/v1/customers/{cid}/erase", headers=auth)
    assert response.status_code == 200, response.text
    assert cid not in response.text  # the answer names the pseudonym only
    assert client.post("/v1/segments", json={"customer_id": cid}).status_code == 404
    assert (
        client.post("/v1/decide", json={"customer_id": cid, "template": "welcome"}).status_code
        == 404
    )


def test_each_decision_made_is_in_the_audit_log_under_a_pseudonym(
    client: TestClient, customers: pd.DataFrame, home: Path
) -> None:
    from personalizer.privacy.decision_audit import DecisionAudit

    cid = consenting_buyer(customers)
    body = {"customer_id": cid, "template": "welcome", "campaign": "audited", "now": NOW}
    made = client.post("/v1/decide", json=body).json()
    assert client.post("/v1/decide", json=body).json() == made  # a retry: not a new decision
    state = client.app.state.service  # type: ignore[attr-defined]
    state.audit.flush()
    with DecisionAudit(Settings(home=home)) as audit:
        rows = audit.read()
    mine = rows[rows["decision_id"] == made["decision_id"]]
    assert len(mine) == 1
    assert cid not in mine["customer"].iloc[0]  # a pseudonym, not the id
    assert mine["model_versions"].iloc[0] == made["model_versions"]
    assert len(mine["fingerprint"].iloc[0]) == 64
