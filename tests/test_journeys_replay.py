"""Replays: the shipped flows over a synthetic shop (every flow sends, the caps hold, nothing is
read from the future, the live queue is untouched) and over Online Retail (orders only)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from conftest import dataset
from personalizer.config import Settings
from personalizer.data.importer import import_path
from personalizer.data.synthetic import ShopConfig, generate_shop
from personalizer.journeys.cli import app
from personalizer.journeys.definitions import default_flows
from personalizer.journeys.engine import OUTCOMES, QUEUE_COLUMNS
from personalizer.journeys.queue import store_path
from personalizer.journeys.replay import replay

runner = CliRunner()
START, MID, END = pd.Timestamp("2026-01-01"), pd.Timestamp("2026-04-01"), pd.Timestamp("2026-07-01")


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """An 800-customer synthetic shop over a year, imported into a data home."""
    root = tmp_path_factory.mktemp("journeys_replay")
    config = ShopConfig(n_customers=800, seed=11, start="2025-07-01", end="2026-06-30")
    generate_shop(config, root / "shop", progress=False)
    settings = Settings(home=root / "home", show_progress=False)
    import_path(settings, root / "shop")
    return settings


@pytest.fixture(scope="module")
def full(shop: Settings):  # type: ignore[no-untyped-def]
    return replay(shop, start=START, end=END)


def test_every_shipped_flow_sends_and_the_caps_hold(shop: Settings, full) -> None:  # type: ignore[no-untyped-def]
    totals = full.totals().set_index("flow")
    assert set(totals.index) == {f.name for f in default_flows().enabled}
    assert (totals["queued"] > 0).all(), totals
    assert (totals["entered"] > 0).all(), totals
    caps = default_flows().caps
    assert 1 <= full.max_per_week <= caps.per_week
    assert full.max_per_day == caps.per_day
    assert totals["capped"].sum() > 0  # the caps had work to do
    assert totals["condition"].loc["browse_abandonment"] > 0
    # the daily table adds up to the steps decided, and covers the span only
    decided = full.decided
    assert int(full.daily[list(OUTCOMES)].to_numpy().sum()) == len(decided)
    assert (decided["decided_at"] > START).all()
    assert (decided["decided_at"] <= END).all()
    queued = decided[decided["outcome"] == "queued"]
    assert queued["decision_id"].notna().all()
    assert not queued["decision_id"].duplicated().any()
    assert (queued["send_at"] >= queued["decided_at"]).all()
    assert not store_path(shop).exists()  # a replay never touches the live queue


def test_a_replay_does_not_peek_into_the_future(shop: Settings) -> None:
    """Replaying only up to MID decides exactly what a replay to END decided up to MID.

    Consent as recorded: the `historical` reading reconstructs past consent from the unsubscribes
    of the whole log it is given, which is the one thing a shorter log changes."""
    longer = replay(shop, start=START, end=END, consent="recorded")
    short = replay(shop, start=START, end=MID, consent="recorded")
    columns = ["customer_id", "flow", "step", "outcome", "send_at", "decision_id", "decided_at"]
    early = longer.decided[longer.decided["decided_at"] <= MID][columns].reset_index(drop=True)
    pd.testing.assert_frame_equal(short.decided[columns].reset_index(drop=True), early)
    assert len(early) > 1000


def test_the_replay_command_writes_the_daily_table_and_the_sends(
    shop: Settings, tmp_path: Path
) -> None:
    daily, sends = tmp_path / "daily.csv", tmp_path / "sends.parquet"
    args = ["replay", "--home", str(shop.home), "--start", "2026-05-01", "--end", "2026-06-01"]
    result = runner.invoke(
        app, [*args, "--every", "30m", "--out", str(daily), "--sends", str(sends)]
    )
    assert result.exit_code == 0, result.output
    assert "emails per customer in any 7 days" in result.output
    table = pd.read_csv(daily)
    assert list(table.columns) == ["day", "flow", "entered", *OUTCOMES]
    assert table["day"].nunique() >= 31
    written = pd.read_parquet(sends)
    assert list(written.columns[:6]) == QUEUE_COLUMNS
    result = runner.invoke(app, [*args, "--every", "soon"])
    assert result.exit_code == 2
    assert "--every: bad duration 'soon'" in result.output


@pytest.mark.slow
def test_online_retail_replays_post_purchase_and_win_back_only(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "home", show_progress=False)
    import_path(settings, dataset("online_retail", "online_retail.parquet"))
    start, end = pd.Timestamp("2011-03-01"), pd.Timestamp("2011-05-01")
    # inferred customers carry no consent: as recorded, nothing at all is sent
    recorded = replay(settings, start=start, end=end, consent="recorded").totals().set_index("flow")
    assert recorded["queued"].sum() == 0
    assert recorded["no_consent"].sum() > 0
    result = replay(settings, start=start, end=end, consent="all")
    totals = result.totals().set_index("flow")
    assert totals.loc["post_purchase", "queued"] > 1000
    assert totals.loc["win_back", "queued"] > 1000
    for flow in ("welcome", "cart_abandonment", "browse_abandonment"):
        assert totals.loc[flow, ["entered", *OUTCOMES]].sum() == 0, flow  # no events, no trigger
    assert result.max_per_week <= 3
    assert result.max_per_day <= 1
    stages = result.decided.loc[result.decided["flow"] == "win_back", "step"].value_counts()
    assert set(stages.index) == {"day30", "day60", "day90"}
