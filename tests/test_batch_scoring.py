"""`personalizer score all`: every customer once, consent respected, resumable, Spark = local.

A small synthetic shop (500 customers) with trained recommender, churn, send-time and category
champions is scored once per module by the local engine; the other tests compare against it.
"""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from conftest import invoke
from personalizer import tracking
from personalizer.batch import local
from personalizer.batch.cli import score_all as score_all_verb
from personalizer.batch.job import score_all
from personalizer.batch.output import ManifestMismatch, read_manifest, read_output
from personalizer.batch.scoring import RECOMMENDATION_COLUMNS, SCORE_COLUMNS, score_partition
from personalizer.config import Settings
from personalizer.data.warehouse import Warehouse
from personalizer.decisions.decider import next_local_hour

runner = CliRunner()
AS_OF = "2026-11-02T12:00:00"
PARTS = 6


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("batch") / "home"
    invoke(home, "data", "generate", "--customers", "500", "--seed", "9")
    invoke(home, "data", "import", str(home / "synthetic"))
    for model in ("recommender", "churn", "send-time", "categories"):
        invoke(home, "train", model)
    return Settings(home=home, show_progress=False)


@pytest.fixture(scope="module")
def clean_run(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clean") / "scored"
    score_all(settings, out, partitions=PARTS, as_of=AS_OF)
    return out


@pytest.fixture(scope="module")
def customers(settings: Settings) -> pd.DataFrame:
    with Warehouse(settings.warehouse_path, read_only=True) as wh:
        frame = wh.query("SELECT customer_id, email_consent, timezone FROM customers")
    return frame.assign(customer_id=frame["customer_id"].astype(str))


def test_every_customer_is_scored_once_in_its_partition(
    clean_run: Path, customers: pd.DataFrame
) -> None:
    scores = read_output(clean_run, "scores")
    assert list(scores.columns) == [*SCORE_COLUMNS, "part"]
    assert scores["customer_id"].is_unique
    assert set(scores["customer_id"]) == set(customers["customer_id"])
    expected = [zlib.crc32(c.encode()) % PARTS for c in scores["customer_id"]]
    assert scores["part"].tolist() == expected
    for table in ("scores", "recommendations"):
        folders = sorted(p.name for p in (clean_run / table).iterdir())
        assert folders == [f"part={k}" for k in range(PARTS)]
    assert not list(clean_run.rglob("*.tmp"))  # nothing half-written is left


def test_manifest_names_the_champions_and_every_partition(
    clean_run: Path, settings: Settings, customers: pd.DataFrame
) -> None:
    manifest = read_manifest(clean_run)
    assert manifest is not None
    assert manifest.finished == list(range(PARTS))
    assert manifest.completed_at is not None
    assert manifest.customers == len(customers)
    assert manifest.as_of == AS_OF
    for name in ("recommender", "churn", "send_time", "categories"):
        assert manifest.models[name] == str(tracking.champion_version(settings, name).version)


def test_no_content_without_consent(clean_run: Path, customers: pd.DataFrame) -> None:
    scores = read_output(clean_run, "scores")
    recs = read_output(clean_run, "recommendations")
    refused = set(customers.loc[~customers["email_consent"].fillna(False), "customer_id"])
    assert refused, "the synthetic shop must have customers without consent"
    assert not set(recs["customer_id"]) & refused
    without = scores[scores["customer_id"].isin(refused)]
    assert without["send_at"].isna().all()
    assert (~without["email_consent"]).all()
    # their predictions stay: they describe the customer, they are not content
    assert without["send_hour_of_week"].notna().all()
    assert without["churn_probability"].notna().any()
    consenting = scores[~scores["customer_id"].isin(refused)]
    assert consenting["send_at"].notna().all()
    per_customer = recs.groupby("customer_id").size()
    assert set(per_customer.index) == set(consenting["customer_id"])
    assert (per_customer == 10).all()
    assert list(recs.columns) == [*RECOMMENDATION_COLUMNS, "part"]


def test_values_equal_the_per_model_scorers(clean_run: Path, settings: Settings) -> None:
    from personalizer.models import churn_pipeline, send_time_pipeline
    from personalizer.models.recommenders import pipeline

    scores = read_output(clean_run, "scores").set_index("customer_id")
    churn = churn_pipeline.score(settings).set_index("customer_id")
    some = churn.index[:25]
    for column in (
        "churn_probability",
        "p_alive",
        "expected_purchases",
        "predicted_value",
        "next_order_date",
    ):
        pd.testing.assert_series_equal(
            scores.loc[some, column], churn.loc[some, column], check_names=False
        )
    never_ordered = scores.index.difference(churn.index)
    assert scores.loc[never_ordered, "churn_probability"].isna().all()
    hours = send_time_pipeline.score(settings).set_index("customer_id")
    known = scores.index.intersection(hours.index)[:50]
    assert (scores.loc[known, "send_hour_of_week"] == hours.loc[known, "hour_of_week"]).all()
    assert (
        scores.loc[known, "send_confidence"] - hours.loc[known, "confidence"]
    ).abs().max() < 1e-12
    recs = read_output(clean_run, "recommendations")
    ids = sorted(recs["customer_id"].unique())[:20]
    direct = pipeline.score(settings, ids, 10).astype({"customer_id": str, "product_id": str})
    mine = recs[recs["customer_id"].isin(ids)].drop(columns="part").reset_index(drop=True)
    direct = direct.sort_values(["customer_id", "rank"], ignore_index=True)
    assert mine["product_id"].tolist() == direct["product_id"].tolist()
    assert mine["strategy"].tolist() == direct["strategy"].astype(str).tolist()


def test_send_at_is_the_next_best_local_hour_outside_quiet_hours(
    clean_run: Path, customers: pd.DataFrame
) -> None:
    scores = read_output(clean_run, "scores").merge(customers[["customer_id", "timezone"]])
    sent = scores[scores["send_at"].notna()]
    assert (sent["send_at"] > pd.Timestamp(AS_OF)).all()
    assert (sent["send_at"] <= pd.Timestamp(AS_OF) + pd.Timedelta(days=8)).all()
    for row in sent.head(40).itertuples():
        expected = next_local_hour(int(row.send_hour_of_week), row.timezone, pd.Timestamp(AS_OF))
        assert row.send_at == pd.Timestamp(expected)
        local_hour = row.send_at.tz_localize("UTC").tz_convert(row.timezone).hour
        assert 7 <= local_hour < 22


def test_interrupted_run_resumes_without_redoing_finished_partitions(
    settings: Settings, clean_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "scored"
    calls: list[int] = []

    def failing(models, rows):  # type: ignore[no-untyped-def]
        if len(calls) == 2:
            raise KeyboardInterrupt("power cut")
        calls.append(len(rows))
        return score_partition(models, rows)

    monkeypatch.setattr(local, "score_partition", failing)
    with pytest.raises(KeyboardInterrupt):
        score_all(settings, out, partitions=PARTS, as_of=AS_OF)
    manifest = read_manifest(out)
    assert manifest is not None
    assert len(manifest.finished) == 2
    assert manifest.completed_at is None

    counted: list[int] = []

    def counting(models, rows):  # type: ignore[no-untyped-def]
        counted.append(len(rows))
        return score_partition(models, rows)

    monkeypatch.setattr(local, "score_partition", counting)
    result = score_all(settings, out, partitions=PARTS)  # no --as-of: the manifest's is reused
    assert len(counted) == PARTS - 2
    assert sorted(set(result.scored) | set(manifest.finished)) == list(range(PARTS))
    for table in ("scores", "recommendations"):
        pd.testing.assert_frame_equal(read_output(out, table), read_output(clean_run, table))

    # a deleted partition is scored again, and only it
    shutil.rmtree(out / "recommendations" / "part=3")
    counted.clear()
    again = score_all(settings, out, partitions=PARTS)
    assert again.scored == [3]
    assert len(counted) == 1
    pd.testing.assert_frame_equal(read_output(out, "scores"), read_output(clean_run, "scores"))


def test_other_options_are_refused_unless_restarted(settings: Settings, tmp_path: Path) -> None:
    out = tmp_path / "scored"
    score_all(settings, out, partitions=3, n=3, as_of=AS_OF)
    with pytest.raises(ManifestMismatch, match=r"n: 3 → 5"):
        score_all(settings, out, partitions=3, n=5)
    with pytest.raises(ManifestMismatch, match="partitions"):
        score_all(settings, out, partitions=4, n=3)
    result = score_all(settings, out, partitions=3, n=5, restart=True, as_of=AS_OF)
    assert result.scored == [0, 1, 2]
    recs = read_output(out, "recommendations")
    assert recs.groupby("customer_id").size().eq(5).all()


def test_the_verb_scores_and_then_finds_everything_done(settings: Settings, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(score_all_verb)
    args = ["--out", str(tmp_path / "o"), "--partitions", "2", "--as-of", AS_OF]
    first = runner.invoke(app, [*args, "--home", str(settings.home)])
    assert first.exit_code == 0, first.output
    said = " ".join(first.output.split())  # rich wraps lines to the terminal
    assert "2 scored now, 0 already finished" in said
    assert "recommender v1" in said
    second = runner.invoke(app, [*args, "--home", str(settings.home)])
    assert "0 scored now, 2 already finished" in " ".join(second.output.split())
    bad = runner.invoke(app, [*args, "--n", "4", "--home", str(settings.home)])
    assert bad.exit_code == 2
    assert "--restart" in bad.output


@pytest.mark.slow
def test_spark_engine_writes_what_the_local_engine_writes(
    settings: Settings, clean_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "spark"
    result = score_all(settings, out, engine="spark", partitions=PARTS, as_of=AS_OF)
    assert result.scored == list(range(PARTS))
    manifest = read_manifest(out)
    assert manifest is not None
    assert manifest.engine == "spark"
    assert manifest.models == read_manifest(clean_run).models  # type: ignore[union-attr]
    for table in ("scores", "recommendations"):
        pd.testing.assert_frame_equal(
            read_output(out, table), read_output(clean_run, table), check_exact=False, rtol=1e-9
        )
    # resumable like the local engine: a finished Spark run has nothing left to do
    assert score_all(settings, out, engine="spark", partitions=PARTS).scored == []
