"""The `personalizer` command line: parses options, builds settings, calls one library function."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from personalizer import __version__
from personalizer.batch.cli import score_all as score_all_command
from personalizer.config import Settings
from personalizer.experiments.cli import app as experiments_app
from personalizer.journeys.cli import app as journeys_app
from personalizer.privacy.cli import app as customers_app
from personalizer.report.cli import report
from personalizer.terminal import HomeOption, console
from personalizer.terminal import fail as _fail

if TYPE_CHECKING:
    import pandas as pd

app = typer.Typer(
    help="Decide who gets each marketing email, what goes in it and when it is sent.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Generate, import and inspect data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
train_app = typer.Typer(
    help="Train models (tracked in MLflow, gated promotion).", no_args_is_help=True
)
score_app = typer.Typer(help="Score customers with the champion models.", no_args_is_help=True)
evaluate_app = typer.Typer(help="Offline evaluation against baselines.", no_args_is_help=True)
models_app = typer.Typer(
    help="The model registry: list versions, promote one.", no_args_is_help=True
)
app.add_typer(train_app, name="train")
app.add_typer(score_app, name="score")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(models_app, name="models")
app.add_typer(experiments_app, name="experiments")
app.add_typer(journeys_app, name="journeys")
app.add_typer(customers_app, name="customers")
score_app.command("all")(score_all_command)
app.command("report")(report)


def _settings(home: Path | None, **overrides: object) -> Settings:
    return Settings.from_env(home, **overrides)


@app.callback()
def _main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # MLflow logs its database migrations at INFO on first use
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
        logging.getLogger("mlflow").setLevel(logging.WARNING)


@app.command()
def version() -> None:
    """Print the version."""
    console.print(__version__)


@data_app.command("generate")
def data_generate(
    customers: Annotated[
        int, typer.Option(help="Number of customers (1,000 to 1,000,000).")
    ] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same shop.")] = 42,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: HOME/synthetic).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Generate the seeded synthetic shop (feeds plus ground truth)."""
    from personalizer.data.synthetic import ShopConfig, generate_shop

    settings = _settings(home)
    if customers < 1:
        raise _fail(f"--customers must be positive, got {customers}")
    target = out or settings.synthetic_dir
    summary = generate_shop(
        ShopConfig(n_customers=customers, seed=seed), target, progress=settings.show_progress
    )
    rows = ", ".join(f"{n:,} {t}" for t, n in summary.rows.items())
    console.print(f"synthetic shop written to {summary.out_dir}: {rows} in {summary.seconds:.1f}s")


@data_app.command("import")
def data_import(
    path: Annotated[
        Path, typer.Argument(help="A feed file, a folder of feeds, or a dataset file.")
    ],
    table: Annotated[
        str | None,
        typer.Option(help="Table of a single canonical file: customers, products, orders, events."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="csv, parquet or jsonl (default: from the extension)."),
    ] = None,
    source: Annotated[
        str, typer.Option(help="auto, canonical, online_retail, cdnow or hillstrom.")
    ] = "auto",
    home: HomeOption = None,
) -> None:
    """Import feeds (CSV, Parquet, JSON Lines) or a public dataset into the warehouse."""
    from personalizer.data.importer import import_path
    from personalizer.data.validate import FeedError
    from personalizer.data.warehouse import WarehouseLocked

    settings = _settings(home)
    if fmt is not None and fmt not in ("csv", "parquet", "jsonl"):
        raise _fail(f"--format must be csv, parquet or jsonl, got {fmt!r}")
    try:
        reports = import_path(settings, path, table=table, fmt=fmt, source=source)  # type: ignore[arg-type]
    except (FeedError, WarehouseLocked) as exc:
        raise _fail(str(exc)) from exc
    summary = Table(title=f"import into {settings.warehouse_path}")
    for name in ("table", "read", "accepted", "added", "updated", "duplicate", "quarantined"):
        summary.add_column(name, justify="left" if name == "table" else "right")
    for r in reports:
        summary.add_row(
            r.table,
            f"{r.rows_read:,}",
            f"{r.accepted:,}",
            f"{r.added:,}",
            f"{r.updated:,}",
            f"{r.duplicates:,}",
            f"{r.quarantined_total:,}",
        )
    console.print(summary)
    erased = sum(r.erased for r in reports)
    if erased:
        console.print(f"rows of erased customers dropped: {erased:,} (they stay erased)")
    reasons: dict[tuple[str, str], int] = {}
    for r in reports:
        for reason, n in r.quarantined.items():
            reasons[(r.table, reason)] = reasons.get((r.table, reason), 0) + n
    if reasons:
        detail = Table(title="quarantined by reason")
        detail.add_column("table")
        detail.add_column("reason")
        detail.add_column("rows", justify="right")
        for (tbl, reason), n in sorted(reasons.items(), key=lambda kv: -kv[1]):
            detail.add_row(tbl, reason, f"{n:,}")
        console.print(detail)
        files = sorted({str(r.quarantine_file) for r in reports if r.quarantine_file})
        console.print("quarantine files:\n  " + "\n  ".join(files))
    inferred = [(r.inferred_customers, r.inferred_products) for r in reports if r.table == "orders"]
    if any(c or p for c, p in inferred):
        c, p = (sum(x) for x in zip(*inferred, strict=True))
        console.print(f"inferred from orders: {c:,} customers, {p:,} products")


@data_app.command("purge-quarantine")
def purge_quarantine_command(
    older_than: Annotated[
        float | None,
        typer.Option(
            "--older-than",
            help="days; default PERSONALIZER_QUARANTINE_RETENTION_DAYS, else 90",
            min=0,
        ),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Delete quarantine files past the retention (every import does it too)."""
    from personalizer.data.quarantine import purge_quarantine

    settings = _settings(home)
    try:
        removed = purge_quarantine(settings.quarantine_dir, older_than)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    console.print(f"{len(removed):,} quarantine files deleted from {settings.quarantine_dir}")


@data_app.command("stats")
def data_stats(home: HomeOption = None) -> None:
    """Row counts, date ranges and customers/products per table."""
    from personalizer.data.warehouse import Warehouse, table_stats

    settings = _settings(home)
    try:
        wh = Warehouse(settings.warehouse_path, read_only=True)
    except FileNotFoundError as exc:
        raise _fail(str(exc)) from exc
    with wh:
        stats = table_stats(wh)
        types = wh.query("SELECT type, count(*) AS n FROM events GROUP BY type ORDER BY n DESC")
        orders = wh.query(
            "SELECT count(DISTINCT order_id) AS orders, sum(quantity * unit_price) AS revenue "
            "FROM orders"
        )
        ledger = wh.query(
            "SELECT count(DISTINCT source) AS sources, coalesce(sum(quarantined), 0) AS quarantined "
            "FROM imports"
        ).iloc[0]
    table = Table(title=f"warehouse {settings.warehouse_path}")
    for name in ("table", "rows", "from", "to", "customers", "products"):
        table.add_column(name, justify="left" if name in ("table", "from", "to") else "right")
    for record in stats.to_dict(orient="records"):
        table.add_row(
            *(
                _cell(record[name])
                for name in ("table", "rows", "from", "to", "customers", "products")
            )
        )
    console.print(table)
    o = orders.iloc[0]
    if o["orders"]:
        console.print(f"orders: {int(o['orders']):,} distinct, revenue {float(o['revenue']):,.2f}")
    if len(types):
        console.print(
            "events by type: " + ", ".join(f"{t} {n:,}" for t, n in types.itertuples(index=False))
        )
    console.print(
        f"imports: {int(ledger['sources']):,} sources, {int(ledger['quarantined']):,} rows quarantined "
        f"(in {settings.quarantine_dir})"
    )


TransactionsOption = Annotated[
    Path | None,
    typer.Option(
        "--transactions",
        help="Order lines (CSV or Parquet: customer_id, order_id, product_id, quantity, "
        "unit_price, ordered_at). Default: the warehouse.",
    ),
]


UntilOption = Annotated[
    str | None, typer.Option(help="Use only order lines before this time (ISO 8601).")
]


@train_app.command("recommender")
def train_recommender(
    transactions: TransactionsOption = None,
    until: UntilOption = None,
    home: HomeOption = None,
) -> None:
    """Train the recommendation engine, log it to MLflow, register it, promote it if better."""
    from personalizer.evaluation.compare import render_table
    from personalizer.models.recommenders.pipeline import train

    settings = _settings(home)
    with _user_errors():
        result = train(settings, transactions, until)
    if not result.table.empty:
        console.print(render_table(_key_columns(result.table), title="held-out validation"))
    for mode, reason in result.choices.items():
        console.print(f"mode {mode}: {reason}")
    _print_registered("recommender", result.version, result.engine_dir, result.decision)


@score_app.command("recommendations")
def score_recommendations(
    customers: Annotated[
        Path, typer.Option("--customers", help="Text file, one customer_id per line.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output Parquet file.")],
    n: Annotated[int, typer.Option("--n", help="Products per customer.", min=1)] = 10,
    exclude_purchased: Annotated[
        bool, typer.Option("--exclude-purchased", help="Only products new to the customer.")
    ] = False,
    home: HomeOption = None,
) -> None:
    """N recommendations per customer with the champion: customer_id, rank, product_id, score, strategy."""
    from personalizer.models.recommenders.pipeline import read_customer_file, score

    settings = _settings(home)
    with _user_errors():
        ids = read_customer_file(customers)
        recs = score(settings, ids, n, exclude_purchased)
    out.parent.mkdir(parents=True, exist_ok=True)
    recs.astype({"customer_id": "string", "product_id": "string"}).to_parquet(out, index=False)
    per = recs.groupby("customer_id").size()
    console.print(
        f"{len(recs):,} recommendations for {per.size:,} customers ({n} each"
        f"{', new products only' if exclude_purchased else ''}) → {out}"
    )
    console.print(
        "by strategy: "
        + ", ".join(f"{k} {v:,}" for k, v in recs["strategy"].value_counts().items())
    )


@train_app.command("churn")
def train_churn(
    transactions: TransactionsOption = None,
    until: UntilOption = None,
    horizon_days: Annotated[
        float, typer.Option(help="Churned = no order in this many days.", min=1)
    ] = 90.0,
    home: HomeOption = None,
) -> None:
    """Train the churn model (validated out of time), log it, register it, promote it if better."""
    from personalizer.models.churn_pipeline import train

    settings = _settings(home)
    with _user_errors():
        result = train(settings, transactions, until, horizon_days)
    _print_frame(
        result.table[["auc", "pr_auc", "brier", "log_loss", "churn_rate", "customers"]],
        f"churn in the {horizon_days:g} days after {result.validation_cutoff:%Y-%m-%d} "
        "(out of time)",
    )
    _print_registered("churn", result.version, result.model_dir, result.decision)


@score_app.command("churn")
def score_churn(
    out: Annotated[Path, typer.Option("--out", help="Output Parquet file.")],
    home: HomeOption = None,
) -> None:
    """Churn probability, P(alive), expected purchases and value, next order date and reasons."""
    from personalizer.models.churn_pipeline import score

    settings = _settings(home)
    with _user_errors():
        scores = score(settings)
    _write(scores.astype({"customer_id": "string"}), out)
    console.print(
        f"{len(scores):,} customers scored → {out}; mean churn probability "
        f"{scores['churn_probability'].mean():.3f}"
    )


@train_app.command("categories")
def train_categories(
    transactions: TransactionsOption = None,
    until: UntilOption = None,
    horizon_days: Annotated[
        float, typer.Option(help="Predict buying in a category within this many days.", min=1)
    ] = 90.0,
    home: HomeOption = None,
) -> None:
    """Train the category propensity model (validated out of time), log, register, gate on AUC."""
    from personalizer.models.category_pipeline import train

    settings = _settings(home)
    with _user_errors():
        result = train(settings, transactions, until, horizon_days)
    _print_frame(
        result.table.set_index("model"),
        f"buying each of {len(result.categories)} categories in the {horizon_days:g} days after "
        f"{result.validation_cutoff:%Y-%m-%d} (out of time, mean over categories)",
    )
    _print_registered("categories", result.version, result.model_dir, result.decision)


@score_app.command("categories")
def score_categories(
    out: Annotated[Path, typer.Option("--out", help="Output Parquet file.")],
    home: HomeOption = None,
) -> None:
    """P(buying in each category in the horizon): customer_id, propensity_<category> columns."""
    from personalizer.models.category_pipeline import score

    settings = _settings(home)
    with _user_errors():
        scores = score(settings)
    _write(scores.astype({"customer_id": "string"}), out)
    console.print(f"{len(scores):,} customers × {scores.shape[1] - 1} categories scored → {out}")


@train_app.command("send-time")
def train_send_time(
    transactions: TransactionsOption = None,
    until: UntilOption = None,
    home: HomeOption = None,
) -> None:
    """Train the send-time model (validated on next-order hours), log, register, gate."""
    from personalizer.models.send_time_pipeline import train

    settings = _settings(home)
    with _user_errors():
        result = train(settings, transactions, until)
    v = result.validation
    console.print(
        f"next order within ±1 hour after {result.validation_cutoff:%Y-%m-%d} "
        f"({int(v['customers']):,} customers): time of day {v['model/time_of_day_hit']:.3f} "
        f"vs shop-wide best hour {v['global/time_of_day_hit']:.3f}; hour of week "
        f"{v['model/hour_of_week_hit']:.3f} vs {v['global/hour_of_week_hit']:.3f}"
    )
    _print_registered("send_time", result.version, result.model_dir, result.decision)


@score_app.command("send-time")
def score_send_time(
    out: Annotated[Path, typer.Option("--out", help="Output Parquet file.")],
    home: HomeOption = None,
) -> None:
    """Each customer's best local hour of the week (0 = Monday 00:00) and its confidence."""
    from personalizer.models.send_time_pipeline import score

    settings = _settings(home)
    with _user_errors():
        hours = score(settings)
    _write(hours.astype({"customer_id": "string"}), out)
    console.print(f"{len(hours):,} customers scored → {out}")


def _print_frame(frame: pd.DataFrame, title: str) -> None:
    table = Table(title=title)
    table.add_column("model")
    for column in frame.columns:
        table.add_column(str(column), justify="right")
    for name, row in frame.iterrows():
        table.add_row(str(name), *(_cell(_rounded(v)) for v in row.tolist()))
    console.print(table)


def _rounded(value: object) -> object:
    """Counts as whole numbers, measures to four decimals."""
    if isinstance(value, float) and value == value:
        return int(value) if value.is_integer() and abs(value) >= 1 else round(value, 4)
    return value


def _print_registered(name: str, version: str, model_dir: Path, decision: Any) -> None:
    console.print(f"registered {name} version {version} ({model_dir})")
    verdict = "promoted to champion" if decision.promoted else "not promoted"
    console.print(f"{verdict}: {decision.reason}")


def _write(frame: pd.DataFrame, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(out, index=False)


@evaluate_app.command("recommender")
def evaluate_recommender(
    transactions: TransactionsOption = None,
    cutoff: Annotated[
        str | None, typer.Option(help="Split time (default: the last 20% of the span, ≤ 90 days).")
    ] = None,
    horizon_days: Annotated[
        float | None, typer.Option(help="Days after the cutoff that count (default: all).")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Temporal split: the engine, every strategy and the baselines, on all/new/cold-start."""
    from personalizer.evaluation.compare import render_table
    from personalizer.models.recommenders.pipeline import evaluate_engine

    settings = _settings(home)
    with _user_errors():
        table, split = evaluate_engine(settings, transactions, cutoff, horizon_days)
    title = (
        f"recommenders at cutoff {split.cutoff:%Y-%m-%d %H:%M} "
        f"({len(split.warm_customers):,} returning, {len(split.cold_customers):,} new customers)"
    )
    console.print(render_table(_key_columns(table), title=title))


@models_app.command("list")
def models_list(home: HomeOption = None) -> None:
    """Registered model versions, their aliases and metrics."""
    from personalizer import tracking

    settings = _settings(home)
    with _user_errors():
        frame = tracking.list_models(settings)
    if frame.empty:
        console.print("no registered models yet: run `personalizer train recommender`")
        return
    keys = ["name", "version", "aliases", "created"]
    for name, versions in frame.groupby("name", sort=True):
        # each model's own validation metrics (its gate metric first), at most six of them
        measured = [c for c in versions.columns[len(keys) + 1 :] if versions[c].notna().any()]
        gate = MODEL_METRICS.get(str(name), [])
        shown = [*[m for m in gate if m in measured], *[m for m in measured if m not in gate]][:6]
        table = Table(title=f"{name} in {settings.mlflow_uri}")
        for column in [*keys[1:], *shown]:
            table.add_column(str(column))
        for record in versions[[*keys[1:], *shown]].itertuples(index=False):
            table.add_row(*(_cell(v) if not isinstance(v, float) else f"{v:.4f}" for v in record))
        console.print(table)


# The metrics `models list` shows first, per registered model (the first is its gate metric).
MODEL_METRICS = {
    "recommender": ["ndcg@10", "recall@10", "new_recall@10"],
    "churn": ["auc", "brier", "pr_auc"],
    "categories": ["auc", "log_loss", "popularity_auc"],
    "send_time": ["time_of_day_hit", "shop_time_of_day_hit"],
    "engagement": ["open_auc", "click_auc", "purchase_auc"],
    "uplift": ["uplift_at_30"],
}


@models_app.command("promote")
def models_promote(
    name: Annotated[str, typer.Argument(help="Registered model name, e.g. recommender.")],
    version: Annotated[str, typer.Argument(help="Version to make champion.")],
    home: HomeOption = None,
) -> None:
    """Make a version the champion, whatever its metrics."""
    from personalizer import tracking

    settings = _settings(home)
    with _user_errors():
        tracking.promote(settings, name, version)
    console.print(f"{name} version {version} is now the champion")


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn expected failures (bad files, missing models, locked stores) into a clear exit 2."""
    from personalizer.data.validate import FeedError
    from personalizer.data.warehouse import WarehouseLocked
    from personalizer.tracking import TrackingError

    try:
        yield
    except (FeedError, WarehouseLocked, TrackingError, FileNotFoundError, ValueError) as exc:
        raise _fail(str(exc)) from exc


def _key_columns(table: Any) -> Any:
    """The columns worth a terminal: recall, NDCG and coverage per mode (MLflow has them all)."""
    keep = [c for c in table.columns if c.split("/")[-1] in ("recall@10", "ndcg@10", "coverage@10")]
    return table[keep] if keep else table


def _cell(value: object) -> str:
    """A stats value for the terminal: thousands separators, dates to the second, blanks."""
    if value is None or value != value:  # None, NaN, NaT
        return ""
    if isinstance(value, int):
        return f"{value:,}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M")
    return str(value)


def main() -> None:
    """Console-script entry point."""
    app()


@train_app.command("uplift")
def train_uplift(
    dataset: Annotated[
        Path, typer.Option("--dataset", help="A Hillstrom-format CSV (history, segment, outcomes).")
    ],
    treatment: Annotated[str, typer.Option(help="The treated arm (a `segment` value).")] = (
        "Womens E-Mail"
    ),
    control: Annotated[str, typer.Option(help="The control arm (a `segment` value).")] = (
        "No E-Mail"
    ),
    target: Annotated[str, typer.Option(help="Outcome: visit or conversion.")] = "visit",
    home: HomeOption = None,
) -> None:
    """Compare the uplift models on a 50/50 split, register the X-learner, promote it if better."""
    from personalizer.models.uplift_pipeline import PUBLISHED_UPLIFT_AT_30, train

    settings = _settings(home)
    with _user_errors():
        result = train(settings, dataset, treatment, control, target)
    _print_frame(
        result.table,
        f"{treatment} vs {control}, {target}: test half of {result.test_customers:,}",
    )
    best = float(result.table.loc[result.default_model, "uplift@30%"])
    verdict = "above" if best > PUBLISHED_UPLIFT_AT_30 else "not above"
    console.print(
        f"{result.default_model} uplift@30% {best:.4f} vs published reference "
        f"{PUBLISHED_UPLIFT_AT_30} (scikit-uplift class transformation): {verdict}"
    )
    _print_registered("uplift", result.version, result.model_dir, result.decision)


@train_app.command("engagement")
def train_engagement(
    until: Annotated[
        str | None, typer.Option(help="Use only events and order lines before this time.")
    ] = None,
    home: HomeOption = None,
) -> None:
    """Train P(open), P(click), P(purchase) (validated out of time), log, register, gate."""
    from personalizer.models.engagement_pipeline import train

    settings = _settings(home)
    with _user_errors():
        result = train(settings, until)
    table = result.table.set_index("method")[
        ["target", "auc", "pr_auc", "brier", "positive_rate", "n"]
    ]
    _print_frame(
        table,
        f"emails sent from {result.validation_cutoff:%Y-%m-%d} (out of time), outcome within "
        "the window after each",
    )
    console.print(f"registered model scores an email sent at {result.as_of:%Y-%m-%d %H:%M}")
    _print_registered("engagement", result.version, result.model_dir, result.decision)


events_app = typer.Typer(
    help="Real-time events: durable, deduplicated ingestion.", no_args_is_help=True
)
app.add_typer(events_app, name="events")


@events_app.command("ingest")
def events_ingest(
    path: Annotated[Path, typer.Argument(help="Events as JSON Lines, CSV or Parquet.")],
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="csv, parquet or jsonl (default: from the extension)."),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Validate events, store new ones durably in the event store, quarantine the bad ones."""
    from personalizer.data.event_store import EventStoreBusy, ingest_file, open_event_store
    from personalizer.privacy.pseudonym import ErasedCustomers

    settings = _settings(home)
    if fmt is not None and fmt not in ("csv", "parquet", "jsonl"):
        raise _fail(f"--format must be csv, parquet or jsonl, got {fmt!r}")
    with _user_errors():
        try:
            with open_event_store(settings) as store:
                result = ingest_file(
                    store,
                    path,
                    fmt=fmt,  # type: ignore[arg-type]
                    quarantine_dir=settings.quarantine_dir,
                    batch_rows=settings.batch_rows,
                    erased=ErasedCustomers(settings),
                )
        except EventStoreBusy as exc:
            raise _fail(str(exc)) from exc
    console.print(
        f"{path}: {result.accepted:,} accepted, {result.duplicates:,} duplicate, "
        f"{len(result.rejected):,} rejected; last sequence number {result.last_seq:,}"
        + (f"; {result.erased:,} of erased customers dropped" if result.erased else "")
    )
    if result.rejected:
        detail = Table(title="rejected by reason")
        detail.add_column("reason")
        detail.add_column("events", justify="right")
        for reason, n in result.reasons.most_common():
            detail.add_row(reason, f"{n:,}")
        console.print(detail)
        console.print(f"quarantine file: {result.quarantine_file}")


segments_app = typer.Typer(
    help="Segments: evaluate definitions over the warehouse, keep membership history.",
    no_args_is_help=True,
)
app.add_typer(segments_app, name="segments")


@segments_app.command("evaluate")
def segments_evaluate(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="The moment described (ISO 8601, UTC; default: now)."),
    ] = None,
    definitions: Annotated[
        Path | None,
        typer.Option("--definitions", help="A segments YAML file (default: the shipped set)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write memberships (customer_id, segment) here.")
    ] = None,
    predictions: Annotated[
        list[Path] | None,
        typer.Option(
            "--predictions",
            help="Model outputs by customer_id (`score churn`, `score categories`), for the "
            "predicted segments; repeat for several files.",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    home: HomeOption = None,
) -> None:
    """Evaluate the segments over the warehouse, print their sizes, record enters and exits."""
    import pandas as pd

    from personalizer.segments.definitions import default_segments, load_segments
    from personalizer.segments.store import read_predictions, run_segments, segments_dir

    settings = _settings(home)
    with _user_errors():
        segments = default_segments() if definitions is None else load_segments(definitions)
        moment = pd.Timestamp(as_of) if as_of else pd.Timestamp.now("UTC")
        if moment.tzinfo is not None:
            moment = moment.tz_convert("UTC").tz_localize(None)
        scores = read_predictions(list(predictions or []))
        run = run_segments(settings, segments, moment, predictions=scores)
    table = Table(title=f"segments as of {moment:%Y-%m-%d %H:%M}")
    for name in ("segment", "customers", "entered", "exited"):
        table.add_column(name, justify="left" if name == "segment" else "right")
    changes = (
        run.changes if run.changes is not None else pd.DataFrame(columns=["segment", "change"])
    )
    counts = changes.groupby(["segment", "change"]).size()
    for segment, size in run.sizes.items():
        table.add_row(
            str(segment),
            f"{size:,}",
            f"{int(counts.get((segment, 'enter'), 0)):,}",
            f"{int(counts.get((segment, 'exit'), 0)):,}",
        )
    console.print(table)
    for segment, reason in run.skipped.items():
        console.print(f"skipped {segment}: {reason}")
    if out is not None:
        _write(run.members[["customer_id", "segment"]].astype("string"), out)
        console.print(f"{len(run.members):,} memberships → {out}")
    console.print(f"membership history: {segments_dir(settings)}")


@app.command("serve")
def serve(
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 3000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    server: Annotated[
        str,
        typer.Option(
            help="uvicorn: the decision app on one uvicorn worker (the measured fast path); "
            "bentoml: the same app mounted in the BentoML service (bentoml serve).",
        ),
    ] = "uvicorn",
    workers: Annotated[
        int,
        typer.Option(
            help="uvicorn worker processes, forked after the models are loaded so they share "
            "them (0: one per core, at most 8). One worker answers /healthz at once and "
            "/readyz when loaded; several start accepting once loaded.",
            min=0,
            max=64,
        ),
    ] = 0,
    home: HomeOption = None,
) -> None:
    """Serve the decision service: decide, recommend, segments, send time, scores, events, preview."""
    settings = _settings(home)
    os.environ["PERSONALIZER_HOME"] = str(settings.home.resolve())
    url = f"http://{host}:{port}"
    console.print(
        f"decision service on {url} (data home {settings.home}); preview: {url}/preview; "
        f"readiness: {url}/readyz" + ("" if server == "uvicorn" else f" and {url}/v1/readyz")
    )
    if not os.environ.get("PERSONALIZER_API_TOKEN"):
        console.print("PERSONALIZER_API_TOKEN is not set: /v1/events and /v1/reload refuse writes")
    cores = len(os.sched_getaffinity(0))
    workers = workers or min(cores, 8)
    if server == "uvicorn" and workers > 1:
        from personalizer.api.workers import serve_workers

        serve_workers(settings, host, port, workers, batch_helper=cores >= 2)
    elif server == "uvicorn":
        import uvicorn

        from personalizer.api.app import create_app

        uvicorn.run(
            create_app(settings, load="background", batch_helper=cores >= 2),
            host=host,
            port=port,
            log_level="warning",
            access_log=False,
        )
    elif server == "bentoml":
        import subprocess
        import sys

        command = [sys.executable, "-m", "bentoml", "serve", "personalizer.service:Personalizer"]
        command += ["--port", str(port), "--host", host]
        raise typer.Exit(subprocess.call(command))
    else:
        raise _fail(f"--server: unknown {server!r}; uvicorn or bentoml")
