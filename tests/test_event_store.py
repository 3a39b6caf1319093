"""The event store: validation and reasons, deduplication, ordering, concurrent writers, SIGKILL."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from personalizer.cli import app
from personalizer.config import Settings
from personalizer.data.event_store import (
    IngestResult,
    SqliteEventStore,
    ingest_events,
    open_event_store,
    store_path,
)

runner = CliRunner()


def event(i: int | str, **over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": f"e{i}",
        "customer_id": "c1",
        "type": "product_view",
        "occurred_at": "2024-05-01T12:00:00Z",
        "product_id": "p1",
    }
    return {**base, **over}


@pytest.fixture
def store(tmp_path: Path) -> Any:
    with SqliteEventStore(tmp_path / "events.sqlite") as opened:
        yield opened


def test_valid_events_are_stored_typed_and_in_order(store: SqliteEventStore) -> None:
    result = ingest_events(
        store, [event(1, properties={"price": 9.5}), event(2, occurred_at="2024-05-01T14:00+02:00")]
    )
    assert (result.accepted, result.duplicates, result.rejected) == (2, 0, ())
    assert result.last_seq == 2
    stored = store.read()
    assert stored["event_id"].tolist() == ["e1", "e2"]
    assert stored["seq"].tolist() == [1, 2]
    assert json.loads(stored["properties"].iloc[0]) == {"price": 9.5}
    # Time zones are converted to naive UTC, as the importers do.
    assert stored["occurred_at"].tolist() == [pd.Timestamp("2024-05-01 12:00")] * 2
    assert pd.isna(stored["campaign_id"].iloc[0])


def test_bad_events_are_rejected_with_field_reason_and_value(
    store: SqliteEventStore, tmp_path: Path
) -> None:
    records: list[Any] = [
        event(1),
        event(2, type="teleport"),
        event(3, occurred_at="yesterday-ish"),
        event(4, customer_id="  "),
        event(5, properties="[1, 2]"),
        {"customer_id": "c1", "type": "purchase", "occurred_at": "2024-05-01"},
        "not an object",
        event(6, occurred_at="1850-01-01"),
    ]
    result = ingest_events(store, records, quarantine_dir=tmp_path / "q", source="api")
    assert result.accepted == 1
    got = [(r.row, r.reason, r.value) for r in result.rejected]
    assert got == [
        (1, "type: unknown event type", "teleport"),
        (2, "occurred_at: unparsable date", "yesterday-ish"),
        (3, "customer_id: missing", "  "),
        (4, "properties: not a JSON object", "[1, 2]"),
        (5, "event_id: missing", None),
        (6, "not a JSON object", "not an object"),
        (7, "occurred_at: date out of range", "1850-01-01"),
    ]
    assert result.rejected[0].event_id == "e2"
    assert store.count() == 1
    # Rejected events land in the quarantine like the importers' bad rows.
    assert result.quarantine_file is not None
    assert result.quarantine_file.parent == tmp_path / "q" / "events"
    lines = [json.loads(x) for x in result.quarantine_file.read_text().splitlines()]
    assert sorted(line["reason"] for line in lines) == sorted(r.reason for r in result.rejected)
    assert {"source", "row", "reason", "value", "record"} <= set(lines[0])


def test_single_events_agree_with_the_pydantic_schema(store: SqliteEventStore) -> None:
    from pydantic import ValidationError

    from personalizer.schema import Event

    cases = [event(1), event(2, type="PURCHASE"), event(3, type="nope"), event(4, event_id="")]
    for case in cases:
        result = ingest_events(store, [case])
        try:
            Event.model_validate({**case, "type": str(case["type"]).lower()})
            valid = True
        except ValidationError:
            valid = False
        assert (result.accepted == 1) is valid, case


def test_duplicates_within_and_across_batches_are_dropped_and_counted(
    store: SqliteEventStore,
) -> None:
    first = ingest_events(store, [event(1), event(2), event(1, customer_id="other")])
    assert (first.accepted, first.duplicates) == (2, 1)
    second = ingest_events(store, [event(2), event(3)])
    assert (second.accepted, second.duplicates) == (1, 1)
    stored = store.read()
    assert stored["event_id"].tolist() == ["e1", "e2", "e3"]
    # Sequence numbers only increase; an ignored duplicate may leave a gap (as in PostgreSQL).
    assert stored["seq"].is_monotonic_increasing
    assert second.last_seq == stored["seq"].max()
    # The first event with an id wins; a later one with the same id changes nothing.
    assert stored["customer_id"].iloc[0] == "c1"
    again = ingest_events(store, [])
    assert (again.accepted, again.duplicates, again.last_seq) == (0, 0, second.last_seq)


def test_read_resumes_from_a_sequence_number(store: SqliteEventStore) -> None:
    for start in range(0, 50, 10):
        ingest_events(store, [event(i) for i in range(start, start + 10)])
    page = store.read(since_seq=0, limit=20)
    assert page["seq"].tolist() == list(range(1, 21))
    rest = store.read(since_seq=int(page["seq"].iloc[-1]), limit=1_000)
    assert rest["seq"].tolist() == list(range(21, 51))
    assert rest["event_id"].tolist() == [f"e{i}" for i in range(20, 50)]
    assert store.read(since_seq=50).empty


def test_the_store_lives_under_the_data_home(settings: Settings) -> None:
    with open_event_store(settings) as opened:
        ingest_events(opened, [event(1)])
    assert store_path(settings) == settings.home / "events.sqlite"
    with SqliteEventStore(store_path(settings)) as reopened:
        assert reopened.count() == 1
        mode = reopened.con.execute("PRAGMA journal_mode").fetchone()
        sync = reopened.con.execute("PRAGMA synchronous").fetchone()
    assert mode is not None
    assert mode[0] == "wal"
    assert sync is not None
    assert sync[0] == 2


def _write_range(path: str, start: int, stop: int, ready: Any, out: Any) -> None:
    total = IngestResult()
    ready.wait(timeout=60)  # both open the new file and write at the same moment
    with SqliteEventStore(Path(path)) as opened:
        for lo in range(start, stop, 100):
            total = total + ingest_events(
                opened, [event(i, customer_id=f"c{i % 7}") for i in range(lo, min(lo + 100, stop))]
            )
    out.put((total.accepted, total.duplicates))


def test_two_processes_writing_at_once_store_every_id_exactly_once(tmp_path: Path) -> None:
    path = str(tmp_path / "events.sqlite")
    ctx = multiprocessing.get_context("spawn")
    out, ready = ctx.Queue(), ctx.Barrier(2)
    # 5,000 events each; ids 2,500-4,999 are sent by both.
    workers = [
        ctx.Process(target=_write_range, args=(path, 0, 5_000, ready, out)),
        ctx.Process(target=_write_range, args=(path, 2_500, 7_500, ready, out)),
    ]
    for w in workers:
        w.start()
    results = [out.get(timeout=120) for _ in workers]
    for w in workers:
        w.join(timeout=60)
        assert w.exitcode == 0
    assert sum(a for a, _ in results) == 7_500
    assert sum(d for _, d in results) == 2_500
    with SqliteEventStore(Path(path)) as opened:
        stored = opened.read(limit=100_000)
    assert len(stored) == 7_500
    assert set(stored["event_id"]) == {f"e{i}" for i in range(7_500)}
    assert stored["seq"].is_monotonic_increasing
    assert stored["seq"].is_unique


STREAM_EVENTS, STREAM_BATCH = 20_000, 200

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from personalizer.data.event_store import SqliteEventStore, ingest_events

    path, total, batch = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    store = SqliteEventStore(path)
    for lo in range(0, total, batch):
        records = [
            {"event_id": f"e{i:06d}", "customer_id": f"c{i % 97}", "type": "add_to_cart",
             "occurred_at": "2024-05-01T12:00:00Z", "product_id": f"p{i % 13}"}
            for i in range(lo, lo + batch)
        ]
        ingest_events(store, records)
        # Only after append returned: the batch is acknowledged.
        print(records[-1]["event_id"], flush=True)
    """
)


def test_sigkill_mid_stream_loses_no_acknowledged_event_and_resend_adds_nothing_twice(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(STREAM_EVENTS), str(STREAM_BATCH)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert child.stdout is not None
    acked = [child.stdout.readline().strip() for _ in range(15)]
    os.kill(child.pid, signal.SIGKILL)
    acked += [line.strip() for line in child.stdout if line.strip()]
    child.wait(timeout=30)
    child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    last_acked = int(acked[-1][1:])
    assert last_acked + 1 < STREAM_EVENTS, "the writer finished before it was killed"

    with SqliteEventStore(path) as reopened:
        stored = reopened.read(limit=STREAM_EVENTS)
        ids = stored["event_id"].tolist()
        # Every acknowledged event is there exactly once; batches are all or nothing, so what is
        # stored is a prefix of the stream (the batch in flight may have committed unacknowledged).
        assert len(ids) == len(set(ids))
        assert ids[: last_acked + 1] == [f"e{i:06d}" for i in range(last_acked + 1)]
        assert len(ids) % STREAM_BATCH == 0
        assert ids == [f"e{i:06d}" for i in range(len(ids))]
        assert stored["seq"].is_monotonic_increasing

        stream = [
            {
                "event_id": f"e{i:06d}",
                "customer_id": f"c{i % 97}",
                "type": "add_to_cart",
                "occurred_at": "2024-05-01T12:00:00Z",
            }
            for i in range(STREAM_EVENTS)
        ]
        resent = IngestResult()
        for lo in range(0, STREAM_EVENTS, STREAM_BATCH):
            resent = resent + ingest_events(reopened, stream[lo : lo + STREAM_BATCH])
        assert resent.accepted == STREAM_EVENTS - len(ids)
        assert resent.duplicates == len(ids)
        assert reopened.count() == STREAM_EVENTS
        assert ingest_events(reopened, stream).accepted == 0
        final = reopened.read(limit=STREAM_EVENTS + 1)["event_id"]
        assert final.is_unique
        assert len(final) == STREAM_EVENTS


def test_cli_ingests_a_file_and_reports_by_reason(tmp_path: Path) -> None:
    feed = tmp_path / "events.jsonl"
    lines = [json.dumps(event(i)) for i in range(3)]
    lines += [json.dumps(event(9, type="teleport")), "{not json", json.dumps(event(0))]
    feed.write_text("\n".join(lines) + "\n")
    home = ["--home", str(tmp_path / "home")]
    result = runner.invoke(app, ["events", "ingest", str(feed), *home])
    assert result.exit_code == 0, result.output
    out = result.output.replace("\n", " ")
    assert "3 accepted, 1 duplicate, 2 rejected" in out
    assert "type: unknown event type" in out
    assert "not JSON" in out
    assert (tmp_path / "home" / "quarantine" / "events").is_dir()
    again = runner.invoke(app, ["events", "ingest", str(feed), *home])
    assert "0 accepted, 4 duplicate, 2 rejected" in again.output.replace("\n", " ")

    parquet = tmp_path / "more.parquet"
    pd.DataFrame([event(i) for i in range(3, 6)]).to_parquet(parquet, index=False)
    result = runner.invoke(app, ["events", "ingest", str(parquet), *home])
    assert "3 accepted, 0 duplicate, 0 rejected" in result.output.replace("\n", " ")
    with SqliteEventStore(tmp_path / "home" / "events.sqlite") as opened:
        assert opened.count() == 6


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("orders.csv", "customer_id,order_id\nc1,o1\n", "missing required column(s) event_id"),
        ("events.parquet", "not parquet", "not a Parquet file"),
        ("events.xml", "<a/>", "unknown feed format"),
        ("missing.jsonl", None, "no such file"),
    ],
)
def test_cli_refuses_a_bad_file_with_exit_2(
    tmp_path: Path, name: str, content: str | None, message: str
) -> None:
    feed = tmp_path / name
    if content is not None:
        feed.write_text(content)
    result = runner.invoke(app, ["events", "ingest", str(feed), "--home", str(tmp_path / "h")])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())  # rich wraps lines to the terminal
    assert result.exception is None or isinstance(result.exception, SystemExit)
