"""The external-evaluation contract, run exactly as an independent scorer runs it.

personalizer train recommender --transactions FILE [--until TIMESTAMP]
personalizer score recommendations --customers FILE --n 10 [--exclude-purchased] --out FILE.parquet
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import online_retail_transactions
from personalizer.evaluation.metrics import evaluate
from personalizer.evaluation.split import temporal_split

CONTRACT_COLUMNS = ["customer_id", "rank", "product_id", "score", "strategy"]


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PERSONALIZER_HOME": str(home)}
    result = subprocess.run(
        [sys.executable, "-m", "personalizer", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def score(home: Path, customers: Path, out: Path, *flags: str) -> None:
    """The scoring half of the contract, N = 10."""
    cli(
        home,
        "score",
        "recommendations",
        "--customers",
        str(customers),
        "--n",
        "10",
        *flags,
        "--out",
        str(out),
    )


def orders_file(tmp_path: Path) -> Path:
    from personalizer.data.synthetic import ShopConfig, generate_shop

    shop = tmp_path / "shop"
    generate_shop(ShopConfig(n_customers=1500, seed=5), shop)
    orders = pd.concat(pd.read_parquet(p) for p in sorted((shop / "orders").glob("*.parquet")))
    path = tmp_path / "lines.csv"
    orders.assign(channel="web").to_csv(path, index=False)  # an extra column, ignored
    return path


def test_train_then_score_follow_the_contract(tmp_path: Path) -> None:
    lines = orders_file(tmp_path)
    home = tmp_path / "home"
    trained = cli(
        home, "train", "recommender", "--transactions", str(lines), "--until", "2026-08-01T00:00:00"
    )
    assert "promoted to champion" in trained.stdout
    known = pd.read_csv(lines, dtype=str)
    known = known[known["ordered_at"] < "2026-08-01"]["customer_id"].unique()[:30].tolist()
    ids = [*known, "never-seen-42"]
    customers = tmp_path / "customers.txt"
    customers.write_text("\n".join(ids) + "\n")
    for flag in ([], ["--exclude-purchased"]):
        out = tmp_path / f"recs{len(flag)}.parquet"
        score(home, customers, out, *flag)
        recs = pd.read_parquet(out)
        assert list(recs.columns) == CONTRACT_COLUMNS
        assert recs["customer_id"].map(type).eq(str).all()
        assert recs["product_id"].map(type).eq(str).all()
        assert recs.groupby("customer_id").size().to_dict() == dict.fromkeys(ids, 10)
        assert (
            recs.groupby("customer_id")["rank"]
            .apply(list)
            .map(lambda r: r == list(range(1, 11)))
            .all()
        )
    listing = cli(home, "models", "list")
    assert "champion" in listing.stdout


def test_scoring_without_a_trained_model_is_a_clear_error(tmp_path: Path) -> None:
    customers = tmp_path / "c.txt"
    customers.write_text("a\n")
    env = {**os.environ, "PERSONALIZER_HOME": str(tmp_path / "empty")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "personalizer",
            "score",
            "recommendations",
            "--customers",
            str(customers),
            "--out",
            str(tmp_path / "o.parquet"),
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "recommender" in (result.stdout + result.stderr).lower()


@pytest.mark.slow
def test_online_retail_targets_through_the_contract(tmp_path: Path) -> None:
    path, lines = online_retail_transactions(tmp_path)
    home = tmp_path / "home"
    cli(home, "train", "recommender", "--transactions", str(path), "--until", "2011-09-01")

    # The published protocol: cleaned lines, customers who bought before and after the cutoff.
    clean = lines.dropna(subset=["customer_id"])
    clean = clean[
        (clean["quantity"] > 0)
        & (clean["unit_price"] > 0)
        & ~clean["order_id"].astype(str).str.startswith("C")
    ]
    clean = clean.assign(customer_id=clean["customer_id"].astype(int).astype(str))
    split = temporal_split(clean, "2011-09-01")
    warm = sorted(split.warm_customers)
    customers = tmp_path / "customers.txt"
    customers.write_text("\n".join(warm))
    figures = {}
    for mode, flag in (("all", []), ("new", ["--exclude-purchased"])):
        out = tmp_path / f"{mode}.parquet"
        score(home, customers, out, *flag)
        truth = split.truth if mode == "all" else split.truth_new
        figures[mode] = evaluate(pd.read_parquet(out), truth, warm, k=10)["recall@10"]
    print(f"Online Retail through the contract: Recall@10 {figures}")
    # README: personal purchase frequency 0.332 (best baseline), target 0.36;
    # new products: ALS 0.112, item-kNN 0.098, target 0.125.
    assert figures["all"] >= 0.36, figures
    assert figures["new"] >= 0.125, figures
