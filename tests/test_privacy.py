"""Privacy: pseudonyms, consent at decision time and in journeys, erasure from every store of a
trained data home (proved by scanning every file afterwards), export, and the decision audit.

A 300-customer synthetic shop is imported, three models are trained, live events are ingested,
a quarantined feed row, segments, a journeys run and a score file are added; one customer who is in
all of them is exported, then erased twice.
"""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from conftest import invoke
from personalizer.config import Settings
from personalizer.data.event_store import SqliteEventStore, ingest_events
from personalizer.data.event_store import store_path as events_path
from personalizer.data.importer import import_path
from personalizer.data.warehouse import Warehouse
from personalizer.journeys.queue import JourneyStore
from personalizer.journeys.queue import store_path as journeys_path
from personalizer.journeys.runs import run_journeys
from personalizer.privacy.cli import app as customers_cli
from personalizer.privacy.decision_audit import DecisionAudit, decision_inputs, fingerprint
from personalizer.privacy.erasure import erase_customer, erase_route_handler, read_audit
from personalizer.privacy.export import export_customer
from personalizer.privacy.pseudonym import (
    KEY_ENV,
    ErasedCustomers,
    drop_erased,
    erased_pseudonyms,
    load_key,
    pseudonymize,
)
from personalizer.privacy.traces import find_traces
from personalizer.segments.definitions import default_segments
from personalizer.segments.store import run_segments

runner = CliRunner()
NOW = pd.Timestamp("2026-11-02 12:00")


def cart(event_id: str, customer_id: str, product_id: str, at: pd.Timestamp) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "customer_id": customer_id,
        "type": "add_to_cart",
        "occurred_at": at.isoformat(),
        "product_id": product_id,
        "properties": {},
    }


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A trained home where `target` is in every store, `refuser` has no consent."""
    home = tmp_path_factory.mktemp("privacy") / "home"
    invoke(home, "data", "generate", "--customers", "300", "--seed", "5")
    invoke(home, "data", "import", str(home / "synthetic"))
    for model in ("recommender", "churn", "send-time"):
        invoke(home, "train", model)
    settings = Settings(home=home, show_progress=False)
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        people = wh.query(
            "SELECT c.customer_id, c.email, c.email_consent, count(o.order_id) AS lines "
            "FROM customers c JOIN orders o USING (customer_id) GROUP BY ALL ORDER BY lines DESC"
        )
        product = str(wh.query("SELECT product_id FROM products LIMIT 1").iloc[0, 0])
    consenting = people[people["email_consent"]]
    target = str(consenting["customer_id"].iloc[0])
    other = str(consenting["customer_id"].iloc[1])
    # no consent and never unsubscribed: consent alone must keep them out
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        unsubscribed = set(
            wh.query("SELECT DISTINCT customer_id FROM events WHERE type = 'unsubscribe'")[
                "customer_id"
            ]
        )
    refusers = people.loc[~people["email_consent"], "customer_id"]
    refuser = str(refusers[~refusers.isin(unsubscribed)].iloc[0])
    email = str(consenting["email"].iloc[0])
    # a bad row of a customers feed: quarantined with the original record (id and email)
    feed = home.parent / "feed"
    feed.mkdir()
    pd.DataFrame(
        {"customer_id": [target], "email": [email], "timezone": ["Mars/Olympus_Mons"]}
    ).to_csv(feed / "customers.csv", index=False)
    import_path(settings, feed / "customers.csv")
    # live events: carts five hours before the journeys run
    with SqliteEventStore(events_path(settings)) as store:
        at = NOW - pd.Timedelta(hours=5)
        result = ingest_events(
            store, [cart(f"live-{c}", c, product, at) for c in (target, other, refuser)]
        )
        assert result.accepted == 3
    run_segments(settings, default_segments(), NOW)
    run_journeys(settings, NOW)
    invoke(home, "score", "churn", "--out", str(home / "scores" / "churn.parquet"))
    with DecisionAudit(settings, retention_days=90) as audit:
        decision = {"decision_id": "d1", "customer_id": target, "template": "welcome",
                    "campaign": "c", "model_versions": {"churn": "1"}, "send": True}  # fmt: skip
        audit.record(decision, fingerprint({"segments": ["vip"]}), at=NOW)
    return {"settings": settings, "target": target, "email": email, "other": other,
            "refuser": refuser}  # fmt: skip


# ---------------------------------------------------------------------------------- consent
@pytest.mark.slow
def test_a_decision_for_a_customer_without_consent_has_no_content(shop: dict[str, Any]) -> None:
    from personalizer.api.app import create_app

    client = TestClient(create_app(shop["settings"], token="t", load="now"))
    refused = client.post(
        "/v1/decide",
        json={"customer_id": shop["refuser"], "template": "vip_offer", "campaign": "x"},
    ).json()
    assert refused["send"] is False
    assert refused["content"] is None
    assert "products" not in refused
    allowed = client.post(
        "/v1/decide", json={"customer_id": shop["other"], "template": "vip_offer", "campaign": "x"}
    ).json()
    assert allowed["send"] is True
    assert allowed["content"]["html"]


@pytest.mark.slow
def test_journeys_queue_nothing_for_a_customer_without_consent(shop: dict[str, Any]) -> None:
    with JourneyStore(journeys_path(shop["settings"])) as store:
        queue = store.queue()
        steps = pd.read_sql_query("SELECT customer_id, outcome FROM steps", store.con)
    assert shop["refuser"] not in set(queue["customer_id"])
    assert set(steps.loc[steps["customer_id"] == shop["refuser"], "outcome"]) == {"no_consent"}
    assert shop["other"] in set(queue["customer_id"])  # the same cart with consent is queued


# ---------------------------------------------------------------------------- export, erase
@pytest.mark.slow
def test_export_then_erase_leaves_nothing_of_the_customer_anywhere(
    shop: dict[str, Any], tmp_path: Path
) -> None:
    settings, target, email = shop["settings"], shop["target"], shop["email"]
    home = settings.home
    before = {(t.path.relative_to(home).parts[0], t.needle) for t in find_traces(home, [target])}
    # the customer is everywhere a customer can be, or the test would prove little
    stores = {store for store, _ in before}
    assert {"warehouse.duckdb", "events.sqlite", "segments", "journeys", "quarantine", "models",
            "mlartifacts", "synthetic", "scores", "privacy"} - stores == {"privacy"}  # fmt: skip

    out = tmp_path / "export.json"
    result = runner.invoke(
        customers_cli, ["export", target, "--out", str(out), "--home", str(home)]
    )
    assert result.exit_code == 0, result.output
    exported = json.loads(out.read_text())
    assert exported["customer"]["email"] == email
    assert len(exported["orders"]) > 3
    assert exported["events"]
    assert [e["event_id"] for e in exported["live_events"]] == [f"live-{target}"]
    assert exported["segments"]["memberships"]
    assert exported["journeys"]["queue"]
    assert exported["quarantine"]
    assert len(exported["decisions"]) == 1
    assert "scores/churn.parquet" in exported["files"]

    erased = runner.invoke(customers_cli, ["erase", target, "--yes", "--home", str(home)])
    assert erased.exit_code == 0, erased.output
    assert "warehouse.orders" in erased.output
    # the shop's feeds still hold them: a re-import and their late events bring nothing back
    output = invoke(home, "data", "import", str(home.parent / "feed" / "customers.csv"))
    assert "rows of erased customers dropped: 1" in output, output
    with SqliteEventStore(events_path(settings)) as store:
        late = [cart("late-1", target, "p-any", NOW), cart("late-2", shop["other"], "p-any", NOW)]
        result = ingest_events(
            store, late, quarantine_dir=settings.quarantine_dir, erased=ErasedCustomers(settings)
        )
    assert (result.erased, result.accepted) == (1, 1)

    traces = find_traces(home, [target, email])
    assert traces == [], [(str(t.path.relative_to(home)), t.where, t.needle) for t in traces]
    # and not even in the freed bytes of the warehouse file
    assert target.encode() not in settings.warehouse_path.read_bytes()
    # others are untouched, and the models still load and score them
    assert find_traces(home, [shop["other"]])
    invoke(home, "score", "churn", "--out", str(tmp_path / "after.parquet"))
    after = pd.read_parquet(tmp_path / "after.parquet")
    assert shop["other"] in set(after["customer_id"])
    assert target not in set(after["customer_id"])

    audit = read_audit(settings)
    assert len(audit) == 1
    record = audit[0]
    assert record["pseudonym"] == pseudonymize(target, load_key(settings))
    assert record["pseudonym"] != target
    assert record["removed"]["warehouse.customers"] == 1
    assert record["removed"]["journeys.queue"] >= 1
    assert record["removed"]["event_store.events"] == 1
    raw = (home / "privacy" / "audit.jsonl").read_text()
    assert target not in raw
    assert email not in raw

    again = erase_customer(settings, target)  # twice: fine, nothing more found
    assert again.removed == {}
    assert not again.newly_erased
    assert len(read_audit(settings)) == 2
    assert erased_pseudonyms(settings) == {record["pseudonym"]}
    empty = export_customer(settings, target)
    assert empty["customer"] is None
    assert empty["orders"] == []
    assert empty["erased"] is True


@pytest.mark.slow
def test_raw_emails_live_only_in_the_warehouse_customers_table(shop: dict[str, Any]) -> None:
    settings = shop["settings"]
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        emails = wh.query("SELECT email FROM customers WHERE email IS NOT NULL LIMIT 40")["email"]
    assert len(emails) == 40
    places = {
        (str(t.path.relative_to(settings.home)), t.where)
        for t in find_traces(settings.home, list(emails))
    }
    # the feeds the shop was imported from hold them too (sources, not stores); the quarantine
    # holds the bad row's original record until the customer is erased or the retention ends
    places = {p for p in places if not p[0].startswith(("synthetic/", "quarantine/"))}
    assert places == {("warehouse.duckdb", "customers.email")}


# ------------------------------------------------------------------------ unit: no shop needed
def test_pseudonyms_are_stable_per_key_and_differ_across_keys(settings: Settings) -> None:
    assert pseudonymize("c1", b"k1") == pseudonymize("c1", b"k1")
    assert pseudonymize("c1", b"k1") != pseudonymize("c1", b"k2")
    assert pseudonymize("c1", b"k1") != pseudonymize("c2", b"k1")
    assert len(pseudonymize("c1", b"k1")) == 64
    assert "c1" not in pseudonymize("c1", b"k1")
    os.environ.pop(KEY_ENV, None)
    key = load_key(settings)
    path = settings.home / "privacy" / "pseudonym.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(settings) == key  # made once, then read back


def test_the_key_from_the_environment_wins(settings: Settings, monkeypatch: Any) -> None:
    monkeypatch.setenv(KEY_ENV, "from-the-vault")
    assert load_key(settings) == b"from-the-vault"
    assert not (settings.home / "privacy" / "pseudonym.key").exists()


def test_training_frames_drop_erased_customers(settings: Settings) -> None:
    orders = pd.DataFrame({"customer_id": ["a", "b", "a", "c"], "order_id": ["1", "2", "3", "4"]})
    assert drop_erased(settings, orders) is orders  # nobody erased: untouched, no key made
    erase_customer(settings, "a")  # an empty home: only the list and the audit are written
    assert list(drop_erased(settings, orders)["customer_id"]) == ["b", "c"]


def test_the_endpoint_handler_returns_the_audit_record_without_the_id(settings: Settings) -> None:
    body = erase_route_handler(settings, "c-42")
    assert body["erased"] is True
    assert "c-42" not in json.dumps(body)


def test_fingerprints_are_canonical() -> None:
    a = {"segments": ["vip"], "scores": {"churn": 0.2, "clv": 3}, "send_at": pd.Timestamp(NOW)}
    b = {"send_at": pd.Timestamp(NOW), "scores": {"clv": 3, "churn": 0.2}, "segments": ["vip"]}
    assert fingerprint(a) == fingerprint(b)
    assert fingerprint(a) != fingerprint({**a, "segments": ["dormant"]})
    decision = {"segments": ["x"], "products": [{"product_id": "p1"}], "send_time": {"send_at": 1}}
    assert decision_inputs(decision)["products"] == ["p1"]


def test_decision_audit_buffers_pseudonymizes_and_purges_by_retention(settings: Settings) -> None:
    audit = DecisionAudit(settings, retention_days=30, batch_size=3, flush_seconds=3600)

    def record(i: int, at: pd.Timestamp) -> None:
        decision = {"decision_id": f"d{i}", "customer_id": f"c{i}", "template": "welcome",
                    "campaign": "x", "model_versions": {"churn": "2"}, "send": i % 2 == 0}  # fmt: skip
        audit.record(decision, fingerprint({"i": i}), at=at)

    record(0, NOW - pd.Timedelta(days=45))
    record(1, NOW - pd.Timedelta(days=31))
    assert audit._con.execute("SELECT count(*) FROM decisions").fetchone()[0] == 0  # buffered
    record(2, NOW - pd.Timedelta(days=29))  # the third fills the batch: written
    assert audit._con.execute("SELECT count(*) FROM decisions").fetchone()[0] == 3
    record(3, NOW)
    assert audit.purge(NOW) == 2
    kept = audit.read()
    assert list(kept["decision_id"]) == ["d2", "d3"]
    assert kept["model_versions"].iloc[0] == {"churn": "2"}
    # pseudonyms, not ids (a hex pseudonym may well start with "c": compare whole values)
    assert not kept["customer"].isin(["c2", "c3"]).any()
    assert kept["customer"].str.fullmatch("[0-9a-f]{16,}").all()
    audit.close()


def test_decision_audit_costs_microseconds_per_record(settings: Settings) -> None:
    n = 20_000
    decision = {"decision_id": "d", "customer_id": "c", "template": "welcome", "campaign": "x",
                "model_versions": {"churn": "2", "recommender": "5"}, "send": True}  # fmt: skip
    print_ = fingerprint({"segments": ["vip"], "products": ["p1", "p2"], "send_at": "2026"})
    with DecisionAudit(settings, retention_days=90) as audit:
        started = time.perf_counter()
        for i in range(n):
            audit.record({**decision, "decision_id": f"d{i}", "customer_id": f"c{i % 500}"}, print_)
        audit.flush()
        per_record = (time.perf_counter() - started) / n * 1e6
        assert len(audit.read()) == n
    assert per_record < 100, f"{per_record:.1f} µs per record"  # 5,000/s is 200 µs of budget
