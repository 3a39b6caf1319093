"""Recommender pipelines: train (log, register, gate), evaluate (compare with baselines), score.

Thin orchestration over the engine, the evaluation package and `tracking`: each function reads its
inputs, calls the library, and returns what the command line prints.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from personalizer import tracking
from personalizer.config import Settings
from personalizer.data.training import load_orders
from personalizer.evaluation.compare import compare
from personalizer.evaluation.metrics import evaluate_split
from personalizer.evaluation.split import Split, temporal_split
from personalizer.models.recommenders.engine import MODES, STRATEGIES, Engine, EngineConfig

log = logging.getLogger(__name__)

MODEL_NAME = "recommender"
BASELINES = ("popular", "purchase_frequency", "item_knn")


@dataclass
class TrainResult:
    """What `train` did."""

    engine_dir: Path
    version: str
    decision: tracking.PromotionDecision
    table: pd.DataFrame  # validation comparison (rows: models; columns: mode/metric)
    choices: dict[str, str]


def validation_table(engine: Engine) -> pd.DataFrame:
    """The engine's held-out comparison (blend vs every strategy), one row per model."""
    results: dict[str, dict[str, dict[str, float]]] = {}
    for mode, choice in engine.choices_.items():
        for model, metrics in choice.validation.items():
            results.setdefault(model, {})[mode] = metrics
    return compare(results) if results else pd.DataFrame()


def train(
    settings: Settings,
    transactions: Path | None = None,
    until: str | None = None,
    config: EngineConfig | None = None,
) -> TrainResult:
    """Fit the engine, log it to MLflow with its comparison, register it, apply the gate."""
    orders, products, cutoff = load_orders(settings, transactions, until)
    engine = Engine(config).fit(orders, cutoff, products, show_progress=settings.show_progress)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    engine_dir = settings.home / "models" / MODEL_NAME / stamp
    engine.save(engine_dir)
    table = validation_table(engine)
    chosen = {mode: engine.choices_[mode].model for mode in MODES}
    metrics = {}
    for mode in MODES:
        for key, value in engine.choices_[mode].validation.get(chosen[mode], {}).items():
            if key != "customers":
                metrics[key if mode == "all" else f"{mode}_{key}"] = value
    params = {
        "source": str(transactions or settings.warehouse_path),
        "until": str(engine.data_.as_of),
        "order_lines": len(orders),
        "customers": engine.data_.n_customers,
        "products": engine.data_.n_products,
        **{f"choice_{m}": chosen[m] for m in MODES},
        **{f"depth_{k}": v for k, v in engine.config.depth.items()},
        "label_days": engine.config.label_days,
        "windows": engine.config.windows,
    }
    example = pd.DataFrame({"customer_id": engine.data_.customer_ids[:3].astype(object)})
    with tracking.start_run(settings, "recommenders", run_name=f"train {stamp}", params=params):
        if not table.empty:
            tracking.log_table(table.reset_index(), "validation_comparison")
            tracking.log_figure(_recall_plot(table), "validation_recall")
        tracking.log_text(
            "\n".join(f"{m}: {engine.choices_[m].reason}" for m in MODES), "choices.txt"
        )
        version = tracking.log_recommender(
            settings, engine_dir, MODEL_NAME, metrics, input_example=example
        )
    decision = tracking.promote_if_better(settings, MODEL_NAME, version.version)
    return TrainResult(
        engine_dir,
        str(version.version),
        decision,
        table,
        {m: engine.choices_[m].reason for m in MODES},
    )


def _recall_plot(table: pd.DataFrame) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [c for c in table.columns if c.endswith("/recall@10")]
    fig, ax = plt.subplots(figsize=(8, 4))
    table[columns].plot.bar(ax=ax)
    ax.set_ylabel("Recall@10 (held-out window)")
    ax.set_title("Blend and strategies on the validation customers")
    fig.tight_layout()
    return fig


def read_customer_file(path: Path) -> list[str]:
    """Customer ids, one per line (blank lines and a `customer_id` header skipped)."""
    lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    ids = [line for line in lines if line]
    if ids and ids[0].lower() == "customer_id":
        ids = ids[1:]
    return ids


def champion_engine(settings: Settings) -> Engine:
    """The engine of the registered champion."""
    return Engine.load(tracking.champion_engine_dir(settings, MODEL_NAME))


def score(
    settings: Settings,
    customers: list[str],
    n: int = 10,
    exclude_purchased: bool = False,
    engine: Engine | None = None,
) -> pd.DataFrame:
    """N recommendations per customer: customer_id, rank, product_id, score, strategy."""
    engine = engine or champion_engine(settings)
    return engine.recommend(customers, n, exclude_purchased=exclude_purchased)


def evaluate_engine(
    settings: Settings,
    transactions: Path | None = None,
    cutoff: str | None = None,
    horizon_days: float | None = None,
    config: EngineConfig | None = None,
    log_to_mlflow: bool = True,
) -> tuple[pd.DataFrame, Split]:
    """Temporal split; fit on the past; compare blend, strategies and baselines on the future.

    Returns the comparison table (rows: models; columns: mode/metric for modes all, new, cold).
    """
    orders, products, _ = load_orders(settings, transactions, None)
    split = temporal_split(orders, cutoff, horizon_days)
    engine = Engine(config).fit(
        split.train, split.cutoff, products, show_progress=settings.show_progress
    )
    for name in BASELINES:
        if name not in engine.strategies_:
            engine.strategies_[name] = STRATEGIES[name]().fit(engine.data_)
    customers = sorted(set(split.customers))
    results = {}
    models = ["engine", *engine.strategies_]
    for model in models:
        recs = {
            mode: engine.recommend(
                customers,
                10,
                exclude_purchased=(mode == "new"),
                model=None if model == "engine" else model,
            )
            for mode in ("all", "new")
        }
        per_mode = {}
        for mode in ("all", "new", "cold"):
            chosen = recs["new" if mode == "new" else "all"]
            per_mode.update(
                evaluate_split(
                    chosen,
                    split,
                    k=10,
                    catalog_size=engine.data_.n_products,
                    modes=[mode],
                )
            )
        results[
            "engine (" + "/".join(engine.choices_[m].model for m in MODES) + ")"
            if model == "engine"
            else model
        ] = per_mode
    table = compare(results)
    if log_to_mlflow:
        params = {
            "cutoff": str(split.cutoff),
            "horizon_days": horizon_days or "all",
            "train_lines": len(split.train),
            "test_lines": len(split.test),
        }
        with tracking.start_run(
            settings,
            "recommender-evaluation",
            run_name=f"evaluate {split.cutoff:%Y-%m-%d}",
            params=params,
        ):
            tracking.log_table(table.reset_index(), "comparison")
            tracking.log_metrics(
                {
                    f"{mode}_{metric}": float(table.iloc[0][f"{mode}/{metric}"])
                    for mode in ("all", "new", "cold")
                    for metric in ("recall@10", "ndcg@10")
                    if f"{mode}/{metric}" in table.columns
                }
            )
            tracking.log_figure(_recall_plot(table), "comparison_recall")
    return table, split
