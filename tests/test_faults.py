"""Faults: the tracking store failing during training, a corrupt champion, a full disk while
importing, a warehouse held by another writer.

Each fault must end in a one-line message naming what failed (exit code 2, no traceback) and leave
nothing half-done: no registered version without a finished run and its files, the champion
unchanged, the warehouse and the import ledger exactly as before, no stray quarantine file.
"""

from __future__ import annotations

import errno
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from starlette.testclient import TestClient
from typer.testing import CliRunner, Result

from personalizer import terminal, tracking
from personalizer.api.app import create_app
from personalizer.cli import app as cli
from personalizer.config import Settings
from personalizer.data import importer
from personalizer.data.quarantine import QuarantineWriter
from personalizer.data.warehouse import Warehouse
from personalizer.models import churn_pipeline

# Deprecations raised inside MLflow itself, not by this project (as in test_tracking.py).
pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Operation with range is deprecated"),
]

runner = CliRunner()
TOKEN = "fault-token"


def invoke(home: Path, *args: str) -> Result:
    return runner.invoke(cli, [*args, "--home", str(home)])


def ok(home: Path, *args: str) -> str:
    result = invoke(home, *args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(autouse=True)
def _unwrapped_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a terminal rich wraps messages at 80 columns; here one message is one line."""
    monkeypatch.setattr(terminal.err, "width", 10_000)


def clean_failure(result: Result) -> str:
    """The error of a command that failed the way a user should see it: exit 2, one line."""
    assert result.exit_code == 2, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)
    [line] = result.output.strip().splitlines()
    assert line.startswith("error: "), line
    return line


# ------------------------------------------------------------------------------ the registry


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 300-customer shop with churn version 1 as the champion."""
    home = tmp_path_factory.mktemp("faults") / "home"
    ok(home, "data", "generate", "--customers", "300", "--seed", "3")
    ok(home, "data", "import", str(home / "synthetic"))
    ok(home, "train", "churn")
    return home


def client_of(home: Path) -> MlflowClient:
    uri = Settings(home=home).mlflow_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def registry(home: Path) -> dict[str, Any]:
    """Versions of churn (number, run status, files present) and the champion."""
    client = client_of(home)
    versions = {}
    for v in client.search_model_versions("name = 'churn'"):
        model = client.get_logged_model(v.source.removeprefix("models:/"))
        files = Path(model.artifact_location.removeprefix("file://"))
        versions[int(v.version)] = (
            client.get_run(v.run_id).info.status,
            (files / "MLmodel").is_file() and any((files / "artifacts").rglob("*.txt")),
        )
    champion = client.get_model_version_by_alias("churn", "champion").version
    return {"versions": versions, "champion": int(champion)}


def assert_consistent(state: dict[str, Any]) -> None:
    """Every registered version comes from a finished run and has its files."""
    for number, (status, has_files) in state["versions"].items():
        assert status == "FINISHED", f"version {number} comes from a {status} run"
        assert has_files, f"version {number} has no model files"


def latest_run_status(home: Path) -> str:
    client = client_of(home)
    experiment = client.get_experiment_by_name(churn_pipeline.EXPERIMENT)
    assert experiment is not None
    [run] = client.search_runs(
        [experiment.experiment_id], order_by=["start_time DESC"], max_results=1
    )
    return str(run.info.status)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("store", ["http", "sqlite"])
def test_an_unreachable_tracking_store_fails_training_with_a_clear_message(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: str
) -> None:
    before = registry(home)
    if store == "http":  # a tracking server that is down
        uri = f"http://127.0.0.1:{closed_port()}"
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
        reason = "Connection refused"
    else:  # a database file that cannot be opened (a folder stands where the file should be)
        (tmp_path / "gone" / "mlflow.db").mkdir(parents=True)
        uri = f"sqlite:///{tmp_path / 'gone' / 'mlflow.db'}"
        reason = "unable to open database file"
    monkeypatch.setattr(Settings, "mlflow_uri", property(lambda self: uri))
    message = clean_failure(invoke(home, "train", "churn"))
    assert f"could not open the tracking store {uri}: the store does not answer (" in message
    assert reason in message
    monkeypatch.undo()
    assert registry(home) == before


def test_a_store_failing_while_registering_leaves_nothing_half_registered(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = registry(home)

    def locked(*args: object, **kwargs: object) -> None:
        raise MlflowException("(sqlite3.OperationalError) database is locked")

    monkeypatch.setattr(MlflowClient, "create_model_version", locked)
    message = clean_failure(invoke(home, "train", "churn"))
    assert "could not register model 'churn' (tracking store sqlite:///" in message
    assert "the store does not answer (database is locked)" in message
    monkeypatch.undo()
    after = registry(home)
    assert after == before  # no new version, the same champion
    assert latest_run_status(home) == "FAILED"
    assert_consistent(after)


def test_a_store_failing_at_promotion_keeps_the_champion(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = registry(home)

    def locked(*args: object, **kwargs: object) -> None:
        raise MlflowException("(sqlite3.OperationalError) database is locked")

    monkeypatch.setattr(MlflowClient, "set_registered_model_alias", locked)
    message = clean_failure(invoke(home, "train", "churn"))
    new = max(before["versions"]) + 1
    assert f"could not decide promotion of 'churn' version {new}" in message
    assert f"Version {new} of 'churn' is registered but was not promoted" in message
    assert "the champion is unchanged" in message
    monkeypatch.undo()
    after = registry(home)
    assert after["champion"] == before["champion"]
    # the new version is complete (finished run, its files): only the gate did not run
    assert set(after["versions"]) == set(before["versions"]) | {new}
    assert_consistent(after)


def test_a_run_failing_after_registration_withdraws_its_version(home: Path) -> None:
    settings = Settings(home=home, show_progress=False)
    before = registry(home)
    folder = tracking.champion_artifact_dir(settings, "churn")
    example = pd.DataFrame(
        {"customer_id": churn_pipeline.load_scorer(folder).orders["customer_id"][:2]}
    )
    started: dict[str, str] = {}

    def register_then_crash() -> None:
        with tracking.start_run(settings, churn_pipeline.EXPERIMENT) as run:
            started["run_id"] = run.info.run_id
            version = tracking.log_directory_model(
                settings,
                folder,
                "churn",
                {"auc": 0.99},
                loader=churn_pipeline.LOADER,
                input_example=example,
            )
            started["version"] = str(version.version)
            raise RuntimeError("killed after registering")

    with pytest.raises(RuntimeError, match="killed"):
        register_then_crash()
    assert int(started["version"]) not in before["versions"]
    run_id = started["run_id"]
    client = client_of(home)
    assert client.get_run(run_id).info.status == "FAILED"
    assert not client.search_model_versions(f"run_id = '{run_id}'")
    assert registry(home) == before


# ------------------------------------------------------------------------- a corrupt champion


def test_a_corrupt_champion_is_named_by_the_cli_and_degrades_the_service(
    home: Path, tmp_path: Path
) -> None:
    """The service side of the recommender is in test_decision_service; this is churn's."""
    settings = Settings(home=home, show_progress=False)
    folder = tracking.champion_artifact_dir(settings, "churn")
    backup = tmp_path / "churn"
    shutil.copytree(folder, backup)
    try:
        booster = next(folder.rglob("*.txt"))
        booster.write_text(booster.read_text()[:200] + "\x00garbage")
        message = clean_failure(
            invoke(home, "score", "churn", "--out", str(tmp_path / "s.parquet"))
        )
        assert "the champion of 'churn' (version" in message
        assert (
            f"{booster.relative_to(folder).as_posix()} has changed since it was logged" in message
        )
        assert not (tmp_path / "s.parquet").exists()

        service = TestClient(create_app(settings, token=TOKEN, load="now"))
    finally:
        shutil.rmtree(folder)
        shutil.copytree(backup, folder)
    ready = service.get("/readyz").json()
    assert ready["ready"]
    assert not ready["models"]["churn"]["loaded"]
    assert "corrupt" in ready["models"]["churn"]["detail"]
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        customer = wh.query("SELECT customer_id FROM orders LIMIT 1")["customer_id"].iat[0]
    decision = service.post("/v1/decide", json={"customer_id": customer, "template": "welcome"})
    assert decision.status_code == 200
    assert any("churn" in part for part in decision.json()["degraded"])
    # files restored: the champion opens again
    ok(home, "score", "churn", "--out", str(tmp_path / "s.parquet"))


# ---------------------------------------------------------------------- a full disk on import

CUSTOMERS = pd.DataFrame(
    {
        "customer_id": ["c1", "c2", "c3", "c4"],
        "email": ["c1@example.com", "not-an-email", "c3@example.com", "c4@example.com"],
        "email_consent": ["yes", "yes", "no", "yes"],
    }
)
PRODUCTS = pd.DataFrame(
    {"product_id": ["p1", "p2", "p3"], "title": list("ABC"), "price": [1.0, 2, 3]}
)


def orders_part(first: int, n: int) -> pd.DataFrame:
    ids = range(first, first + n)
    return pd.DataFrame(
        {
            "customer_id": [f"c{1 + i % 4}" for i in ids],
            "order_id": [f"o{i}" for i in ids],
            "product_id": [f"p{1 + i % 3}" for i in ids],
            "quantity": [1 + i % 2 for i in ids],
            "unit_price": [2.5] * n,
            "ordered_at": pd.date_range("2025-01-01", periods=n, freq="D")
            + pd.Timedelta(days=first),
        }
    )


@pytest.fixture
def feed(tmp_path: Path) -> Path:
    """A folder of feeds: customers (one bad email), products, three order parts, events."""
    shop = tmp_path / "shop"
    (shop / "orders").mkdir(parents=True)
    CUSTOMERS.to_csv(shop / "customers.csv", index=False)
    PRODUCTS.to_csv(shop / "products.csv", index=False)
    for part in range(3):
        orders_part(part * 20, 20).to_parquet(shop / "orders" / f"part-{part}.parquet", index=False)
    events = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(10)],
            "customer_id": ["c1"] * 10,
            "type": ["product_view"] * 10,
            "occurred_at": ["2025-03-01T10:00:00Z"] * 10,
            "product_id": ["p1"] * 10,
        }
    )
    events.to_json(shop / "events.jsonl", orient="records", lines=True)
    return shop


def warehouse_state(settings: Settings) -> dict[str, Any]:
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        counts = {
            t: int(wh.query(f"SELECT count(*) AS n FROM {t}")["n"].iat[0])
            for t in ("customers", "products", "orders", "events")
        }
        ledger = wh.query("SELECT * FROM imports ORDER BY imported_at").to_dict("records")
    quarantine = sorted(str(p) for p in settings.quarantine_dir.rglob("*") if p.is_file())
    return {"counts": counts, "ledger": ledger, "quarantine": quarantine}


def no_space(*args: object) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", *args)


def fail_on_call(
    monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, nth: int, error: Any
) -> None:
    """Make `owner.name` raise `error()` on its nth call (the earlier calls work)."""
    original = getattr(owner, name)
    calls = {"n": 0}

    def patched(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == nth:
            if name == "add":  # the quarantine writer: some lines reach the disk first
                original(*args, **kwargs)
            raise error()
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, patched)


@pytest.mark.parametrize(
    ("where", "owner", "name", "nth", "error"),
    [
        # staging the second order part, after customers, products and the first part
        ("staging", Warehouse, "stage", 4, lambda: no_space("/tmp/duckdb.tmp")),
        # the quarantine file, midway through its lines
        ("quarantine", QuarantineWriter, "add", 2, lambda: no_space("x.jsonl.partial")),
        # DuckDB writing its file at the last table's ledger line
        (
            "warehouse",
            Warehouse,
            "record_import",
            6,
            lambda: duckdb.IOException(
                'IO Error: Could not write file "warehouse.duckdb.wal": No space left on device'
            ),
        ),
    ],
)
def test_a_full_disk_while_importing_writes_nothing(
    settings: Settings,
    tmp_path: Path,
    feed: Path,
    monkeypatch: pytest.MonkeyPatch,
    where: str,
    owner: Any,
    name: str,
    nth: int,
    error: Any,
) -> None:
    home = settings.home
    # something is already there, so "as before" is not just "empty"
    orders_part(0, 5).to_csv(tmp_path / "orders.csv", index=False)
    ok(home, "data", "import", str(tmp_path / "orders.csv"))
    before = warehouse_state(settings)

    fail_on_call(monkeypatch, owner, name, nth, error)
    message = clean_failure(invoke(home, "data", "import", str(feed)))
    assert f"no space left on the disk holding {home}" in message
    assert "MB free of" in message
    assert "rolled back and nothing of it was written" in message
    monkeypatch.undo()

    assert warehouse_state(settings) == before
    assert not list(settings.quarantine_dir.rglob("*.partial"))

    # space is back: the same import adds everything, once
    ok(home, "data", "import", str(feed))
    after = warehouse_state(settings)
    files = 1 + 1 + 3 + 1
    assert len(after["ledger"]) == len(before["ledger"]) + files
    assert after["counts"] == {"customers": 4, "products": 3, "orders": 60, "events": 10}
    assert len(after["quarantine"]) == len(before["quarantine"]) + 1  # the bad email
    ok(home, "data", "import", str(feed))
    assert warehouse_state(settings)["counts"] == after["counts"]


# ----------------------------------------------------------- the warehouse held by another writer


class Holder:
    """Another process holding the warehouse open for writing until told to let go."""

    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import duckdb, sys; c = duckdb.connect({str(path)!r}); print('ready', flush=True); "
                "sys.stdin.readline(); c.close()",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "ready"

    @property
    def pid(self) -> int:
        return self.process.pid

    def release(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        self.process.wait(timeout=30)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()


def test_a_warehouse_held_by_another_writer_is_waited_for_then_named(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = settings.home
    orders = tmp_path / "orders.csv"
    orders_part(0, 10).to_csv(orders, index=False)
    Warehouse(settings.warehouse_path).close()

    holder = Holder(settings.warehouse_path)
    try:
        monkeypatch.setattr(importer, "LOCK_WAIT_SECONDS", 1.0)
        started = time.monotonic()
        message = clean_failure(invoke(home, "data", "import", str(orders)))
        waited = time.monotonic() - started
        assert f"the warehouse {settings.warehouse_path} is locked by another process" in message
        assert f"process {holder.pid} (" in message
        assert "duckdb.connect" in message  # the holder's command line
        assert "waited 1 s to write to it" in message
        assert 1.0 <= waited < 10

        # the holder lets go while the import waits: the import goes through
        monkeypatch.setattr(importer, "LOCK_WAIT_SECONDS", 30.0)
        threading.Timer(1.5, holder.release).start()
        started = time.monotonic()
        output = ok(home, "data", "import", str(orders))
        assert time.monotonic() - started >= 1.4
        assert "10" in output
    finally:
        holder.kill()
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        assert int(wh.query("SELECT count(*) AS n FROM orders")["n"].iat[0]) == 10
        assert int(wh.query("SELECT count(*) AS n FROM imports")["n"].iat[0]) == 1
