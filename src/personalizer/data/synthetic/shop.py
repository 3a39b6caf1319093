"""The seeded synthetic shop: the project's embedded default dataset, with known ground truth.

A deterministic simulation of an online shop (12 categories, consumables and durables) whose hidden
mechanics are written next to the data, so recommenders, churn, send-time, uplift and segment
models can be tested against the truth. Customers are simulated in chunks of `chunk_size`; chunk i
draws from `SeedSequence([seed, 2, i])`, so a chunk's rows depend only on the config and its index,
and memory stays bounded at a million customers.

Mechanics (constants in the sibling modules):
    customers   Dirichlet category tastes (most favour 1-3 categories); 20% never buy, 35% of the
                others leave within a day of their first order (one_time); a gamma base
                order rate (mean one order per 45 days) slowed for 35% of customers by a time warp
                rate(t) = base / (1 + slowdown * years active); dropout after an exponential
                lifetime (gamma hazard, mean 700 days): nothing is bought or browsed after it.
    orders      base orders from the rate above, products by taste then Zipf popularity; a second
                item 25% of the time; bundle partners added with p 0.35; staple consumable rebought
                every replenishment interval (x lognormal 0.2) while active; next-purchase pairs
                A -> B within 30 days with p 0.3-0.4; campaign orders caused by emails.
    events      signup; before every order page_view, product_view(s) and add_to_cart per line,
                checkout_started, purchase (same time as the order, properties order_id + value);
                browse sessions that do not convert (views from tastes, a recurring wish product,
                abandoned carts and checkouts); email events of every send.
    email       a campaign every `campaign_every_days`, featuring a category, sent over a week at a
                random hour per recipient to a random 60% of consenting, signed-up, subscribed
                customers minus a random 10% holdout. 1.5% bounce. P(human open) = engagement x
                (0.35 + 0.65 exp(-d^2 / 2 3^2)) x (0.6 + 1.4 interest) (x 0.3 after dropout), with
                d the circular distance in hours between the local send hour-of-week and the
                preferred one, interest the taste for the featured category; far from it
                people open at their next preferred hour of day. MPP users (30%) machine-open every
                delivered email 1-15 min after delivery (user agent "Mozilla/5.0"). Clicks come from
                human opens (p 0.08 + 0.5 interest) and lead to a product_view. Unsubscribe per
                delivered email with p 0.002 (+0.01 when uninterested); nothing is sent after it.
                A delivered email causes an extra order within days with p persuadability x (1 after
                a click, else 0.35); holdout customers never get this, so uplift is known.

Output layout of `generate_shop(config, out_dir)`:
    customers.parquet, products.parquet           canonical tables (columns of `schema.py`)
    orders/part-NNNNN.parquet, events/part-NNNNN.parquet   one part per chunk
    manifest.json                                 config, generator version, rows per file
    truth/products.parquet        product_id, category, is_consumable, replenishment_days,
                                  popularity (share within its category)
    truth/bundles.parquet         bundle_id, product_id (anchor), partner_product_id,
                                  attach_probability
    truth/next_purchase.parquet   product_id, next_product_id, probability, within_days
    truth/campaigns.parquet       campaign_id, starts_at, ends_at (sends happen in between),
                                  featured_category
    truth/customers.parquet       customer_id, never_buys, one_time, base_order_rate_per_day,
                                  slowdown_per_year, churn_hazard_per_day, active_from,
                                  dropout_at (may lie past `end`), churned, churned_at,
                                  preferred_hour_of_week (local, Monday 00:00 = 0), machine_opener
                                  (Apple MPP), mail_client, email_engagement, persuadability,
                                  staple_product_id, consent_at_signup, unsubscribed_at,
                                  taste_<category> (one column per category, rows sum to 1)
    truth/campaign_assignments.parquet  campaign_id, customer_id, group (treatment / control),
                                  planned_send_at (also for control), bounced, human_open,
                                  machine_open, clicked, unsubscribed, persuaded_order_id
    truth/machine_opens.parquet   event_id, customer_id, campaign_id, occurred_at of every
                                  machine (MPP proxy) email_open; all other opens are human
    truth/orders.parquet          order_id, customer_id, kind (base, replenishment, follow_up,
                                  campaign), campaign_id (for campaign orders)

`customers.email_consent` is the consent of today: False for customers who unsubscribed.
Timestamps are naive UTC, microsecond unit, all in [start, end + 1 day) except `signed_up_at`
(some customers signed up before `start`) and the latent `dropout_at`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from personalizer.data.synthetic import tables
from personalizer.data.synthetic.catalog import Catalog, make_catalog
from personalizer.data.synthetic.config import STREAM_CHUNK, ShopConfig
from personalizer.data.synthetic.customers import draw_population
from personalizer.data.synthetic.email import simulate_email
from personalizer.data.synthetic.events import build_events
from personalizer.data.synthetic.orders import build_orders

GENERATOR_VERSION = "1.0.0"
TABLE_FILES = ("customers", "products", "orders", "events")
CHUNK_TRUTH = (
    "truth/customers",
    "truth/campaign_assignments",
    "truth/machine_opens",
    "truth/orders",
)
PARTED = ("orders", "events")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShopSummary:
    """What `generate_shop` wrote."""

    out_dir: Path
    rows: dict[str, int]  # customers, products, orders, events
    seconds: float


def simulate_chunk(
    config: ShopConfig, catalog: Catalog, chunk_index: int
) -> dict[str, pd.DataFrame]:
    """Simulate one chunk of customers in memory.

    Returns:
        Frames keyed "customers", "orders", "events" (schema columns) and "truth/customers",
        "truth/campaign_assignments", "truth/machine_opens", "truth/orders".
    """
    return {
        name: table.to_pandas()
        for name, table in _simulate_tables(config, catalog, chunk_index).items()
    }


def generate_shop(config: ShopConfig, out_dir: Path, *, progress: bool = False) -> ShopSummary:
    """Simulate the whole shop and write it to `out_dir` (layout in the module docstring).

    Stale part files of an earlier run in `out_dir` are removed first.
    """
    began = time.perf_counter()
    out_dir = Path(out_dir)
    _prepare(out_dir)
    catalog = make_catalog(config)
    rows: dict[str, int] = {}
    singles = {
        "products": catalog.products,
        "truth/products": catalog.truth_products,
        "truth/bundles": catalog.bundles,
        "truth/next_purchase": catalog.next_purchase,
        "truth/campaigns": catalog.campaigns,
    }
    for name, frame in singles.items():
        pq.write_table(
            pa.Table.from_pandas(frame, preserve_index=False), out_dir / f"{name}.parquet"
        )
        rows[name] = len(frame)

    writers: dict[str, pq.ParquetWriter] = {}
    try:
        for chunk in _chunks(config, progress):
            produced = _simulate_tables(config, catalog, chunk)
            for name, table in produced.items():
                rows[name] = rows.get(name, 0) + table.num_rows
                if name in PARTED:
                    pq.write_table(table, out_dir / name / f"part-{chunk:05d}.parquet")
                    continue
                if name not in writers:
                    writers[name] = pq.ParquetWriter(out_dir / f"{name}.parquet", table.schema)
                writers[name].write_table(table)
    finally:
        for writer in writers.values():
            writer.close()

    seconds = time.perf_counter() - began
    table_rows = {name: rows[name] for name in TABLE_FILES}
    manifest = {
        "generator": "personalizer.data.synthetic",
        "generator_version": GENERATOR_VERSION,
        "config": asdict(config),
        "rows": table_rows,
        "truth_rows": {name: n for name, n in rows.items() if name.startswith("truth/")},
        "chunks": config.n_chunks,
        "seconds": round(seconds, 3),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log.info("synthetic shop: %s rows in %.1f s -> %s", table_rows, seconds, out_dir)
    return ShopSummary(out_dir=out_dir, rows=table_rows, seconds=seconds)


def _simulate_tables(config: ShopConfig, catalog: Catalog, chunk_index: int) -> dict[str, pa.Table]:
    rng = config.rng(STREAM_CHUNK, chunk_index)
    pop = draw_population(config, catalog, chunk_index, rng)
    email = simulate_email(config, catalog, pop, rng)
    orders = build_orders(catalog, pop, email, rng)
    events = build_events(config, catalog, pop, orders, email, rng)

    cid = tables.customer_ids(config, pop)
    oid = tables.order_ids(config, chunk_index, orders)
    event_table = tables.events_table(config, catalog, chunk_index, cid, oid, orders, events)
    return {
        "customers": tables.customers_table(config, pop, cid, email),
        "orders": tables.orders_table(config, catalog, cid, oid, orders),
        "events": event_table,
        "truth/customers": tables.truth_customers_table(config, catalog, pop, cid, email),
        "truth/campaign_assignments": tables.truth_assignments_table(
            config, catalog, cid, oid, orders, email
        ),
        "truth/machine_opens": tables.truth_machine_opens_table(event_table, events.machine),
        "truth/orders": tables.truth_orders_table(catalog, cid, oid, orders, email),
    }


def _prepare(out_dir: Path) -> None:
    for sub in (*PARTED, "truth"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    for sub in PARTED:
        for stale in (out_dir / sub).glob("part-*.parquet"):
            stale.unlink()


def _chunks(config: ShopConfig, progress: bool) -> Iterator[int]:
    if not progress:
        yield from range(config.n_chunks)
        return
    from rich.progress import Progress

    with Progress(transient=True) as bar:
        task = bar.add_task(f"simulating {config.n_customers:,} customers", total=config.n_chunks)
        for chunk in range(config.n_chunks):
            yield chunk
            bar.advance(task)
