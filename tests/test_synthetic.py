"""The synthetic shop: layout, schema, determinism, and every known mechanism visible in the data.

One shop of 3,000 customers in three chunks is generated once for the module; the behavioural tests
check that the ground truth in `truth/` really drives the feeds (direction and size of effects).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from personalizer import schema
from personalizer.data.synthetic import (
    GENERATOR_VERSION,
    ShopConfig,
    generate_shop,
    make_catalog,
    simulate_chunk,
)

CONFIG = ShopConfig(n_customers=3000, seed=7, chunk_size=1000)
START = pd.Timestamp(CONFIG.start)
STOP = pd.Timestamp(CONFIG.end) + pd.Timedelta(days=1)
TRUTH_FILES = {
    "customers",
    "products",
    "bundles",
    "next_purchase",
    "campaigns",
    "campaign_assignments",
    "machine_opens",
    "orders",
}


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop")
    summary = generate_shop(CONFIG, out)
    assert summary.out_dir == out
    assert summary.seconds > 0
    return out


@pytest.fixture(scope="module")
def data(shop: Path) -> dict[str, pd.DataFrame]:
    frames = {name: pd.read_parquet(shop / f"{name}.parquet") for name in ("customers", "products")}
    for name in ("orders", "events"):
        parts = sorted((shop / name).glob("part-*.parquet"))
        frames[name] = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    for name in TRUTH_FILES:
        frames[f"truth/{name}"] = pd.read_parquet(shop / "truth" / f"{name}.parquet")
    return frames


def _of_type(events: pd.DataFrame, kind: schema.EventType) -> pd.DataFrame:
    return events[events["type"] == kind.value]


# --- layout, schema, determinism ------------------------------------------------------------


def test_generate_shop_writes_the_documented_layout(shop: Path) -> None:
    files = {p.relative_to(shop).as_posix() for p in shop.rglob("*") if p.is_file()}
    parts = {f"{t}/part-{i:05d}.parquet" for t in ("orders", "events") for i in range(3)}
    truth = {f"truth/{name}.parquet" for name in TRUTH_FILES}
    assert files == {"customers.parquet", "products.parquet", "manifest.json"} | parts | truth


def test_manifest_row_counts_equal_rows_on_disk(shop: Path) -> None:
    manifest = json.loads((shop / "manifest.json").read_text())
    assert manifest["generator_version"] == GENERATOR_VERSION
    assert manifest["config"]["n_customers"] == CONFIG.n_customers
    on_disk = {
        table: sum(pq.read_metadata(p).num_rows for p in shop.glob(f"{table}*.parquet"))
        + sum(pq.read_metadata(p).num_rows for p in shop.glob(f"{table}/part-*.parquet"))
        for table in schema.TABLES
    }
    assert manifest["rows"] == on_disk
    assert on_disk["customers"] == CONFIG.n_customers
    for name, rows in manifest["truth_rows"].items():
        assert pq.read_metadata(shop / f"{name}.parquet").num_rows == rows


def test_rerun_into_the_same_folder_leaves_no_stale_parts(tmp_path: Path) -> None:
    generate_shop(ShopConfig(n_customers=1200, chunk_size=400), tmp_path)
    summary = generate_shop(ShopConfig(n_customers=1000), tmp_path)
    assert len(list((tmp_path / "events").glob("part-*.parquet"))) == 1
    assert summary.rows["customers"] == 1000


def test_columns_and_dtypes_match_the_schema(data: dict[str, pd.DataFrame]) -> None:
    for table in schema.TABLES:
        assert list(data[table].columns) == [c.name for c in schema.columns(table)], table
    assert str(data["events"]["occurred_at"].dtype).startswith("datetime64")
    assert str(data["orders"]["ordered_at"].dtype).startswith("datetime64")
    assert data["customers"]["email_consent"].dtype == bool
    assert data["products"]["in_stock"].dtype == bool
    assert data["orders"]["quantity"].dtype == np.float64
    assert 0.7 < data["customers"]["email_consent"].mean() < 0.95
    assert 0.9 < data["products"]["in_stock"].mean() < 1.0


def test_sampled_records_validate_against_the_pydantic_models(
    data: dict[str, pd.DataFrame],
) -> None:
    for table in schema.TABLES:
        sample = data[table].sample(200, random_state=0, replace=True)
        for row in sample.to_dict("records"):
            row = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in row.items()}
            for field in ("attributes", "properties"):
                if field in row:
                    row[field] = json.loads(row[field]) if row[field] else {}
            schema.RECORDS[table](**row)


def test_same_seed_same_chunk_other_seed_other_chunk(shop: Path) -> None:
    catalog = make_catalog(CONFIG)
    first = simulate_chunk(CONFIG, catalog, 1)
    again = simulate_chunk(CONFIG, make_catalog(CONFIG), 1)
    assert first.keys() == again.keys()
    for name in first:
        pd.testing.assert_frame_equal(first[name], again[name])
    on_disk = pd.read_parquet(shop / "events" / "part-00001.parquet")
    pd.testing.assert_frame_equal(first["events"], on_disk)

    other = ShopConfig(n_customers=3000, seed=8, chunk_size=1000)
    different = simulate_chunk(other, make_catalog(other), 1)
    assert not first["events"]["occurred_at"].equals(different["events"]["occurred_at"])
    assert not first["customers"]["timezone"].equals(different["customers"]["timezone"])


def test_a_chunk_does_not_depend_on_the_size_of_the_shop() -> None:
    small = ShopConfig(n_customers=1000, n_products=300, chunk_size=500)
    large = ShopConfig(n_customers=1500, n_products=300, chunk_size=500)
    a = simulate_chunk(small, make_catalog(small), 1)
    b = simulate_chunk(large, make_catalog(large), 1)
    for name in ("customers", "orders", "events"):
        pd.testing.assert_frame_equal(a[name], b[name])


# --- integrity and time ---------------------------------------------------------------------


def test_referential_integrity_and_unique_keys(data: dict[str, pd.DataFrame]) -> None:
    customers = set(data["customers"]["customer_id"])
    products = set(data["products"]["product_id"])
    orders, events = data["orders"], data["events"]
    assert data["customers"]["customer_id"].is_unique
    assert data["products"]["product_id"].is_unique
    assert set(orders["customer_id"]) <= customers
    assert set(orders["product_id"]) <= products
    assert not orders.duplicated(["order_id", "product_id"]).any()
    assert (orders.groupby("order_id")["customer_id"].nunique() == 1).all()
    assert events["event_id"].is_unique
    assert set(events["customer_id"]) <= customers
    assert set(events["product_id"].dropna()) <= products
    assert set(events["campaign_id"].dropna()) <= set(data["truth/campaigns"]["campaign_id"])
    assert set(events["type"]) <= {t.value for t in schema.EventType}
    assert data["customers"]["email"].str.endswith("@example.com").all()
    assert data["customers"]["timezone"].isin(list(schema.known_timezones())).all()


def test_every_order_has_a_purchase_event_at_the_same_time(data: dict[str, pd.DataFrame]) -> None:
    purchases = _of_type(data["events"], schema.EventType.PURCHASE)
    props = purchases["properties"].map(json.loads)
    by_event = pd.DataFrame(
        {"order_id": props.str["order_id"], "occurred_at": purchases["occurred_at"].to_numpy()}
    )
    heads = data["orders"].groupby("order_id", as_index=False)["ordered_at"].first()
    joined = heads.merge(by_event, on="order_id", how="outer", validate="1:1")
    assert (joined["ordered_at"] == joined["occurred_at"]).all()


def test_ordered_products_were_viewed_and_carted_before(data: dict[str, pd.DataFrame]) -> None:
    events = data["events"]
    for kind in (schema.EventType.PRODUCT_VIEW, schema.EventType.ADD_TO_CART):
        seen = _of_type(events, kind)[["customer_id", "product_id", "occurred_at"]]
        lines = data["orders"][["customer_id", "product_id", "order_id", "ordered_at"]]
        pairs = lines.merge(seen, on=["customer_id", "product_id"])
        before = pairs[pairs["occurred_at"] < pairs["ordered_at"]]
        assert before[["order_id", "product_id"]].drop_duplicates().shape[0] == len(lines)


def test_timestamps_lie_in_the_simulated_window(data: dict[str, pd.DataFrame]) -> None:
    for table, column in (("events", "occurred_at"), ("orders", "ordered_at")):
        stamps = data[table][column]
        assert stamps.min() >= START, table
        assert stamps.max() < STOP, table
    signed_up = data["customers"]["signed_up_at"]
    assert (signed_up < START).any()
    assert (signed_up >= START).any()
    signups = _of_type(data["events"], schema.EventType.SIGNUP)
    assert len(signups) == (signed_up >= START).sum()


# --- customers: buying, churn, consumables --------------------------------------------------


def test_some_never_buy_many_buy_once(data: dict[str, pd.DataFrame]) -> None:
    truth = data["truth/customers"].set_index("customer_id")
    counts = data["orders"].groupby("customer_id")["order_id"].nunique()
    counts = counts.reindex(truth.index, fill_value=0)
    assert (counts[truth["never_buys"]] == 0).all()
    assert 0.1 < (counts == 0).mean() < 0.6
    buyers = counts[counts > 0]
    assert (buyers == 1).mean() > 0.25
    assert buyers.max() >= 20


def test_churned_customers_buy_nothing_after_churned_at(data: dict[str, pd.DataFrame]) -> None:
    truth = data["truth/customers"]
    assert 0.2 < truth["churned"].mean() < 0.8
    assert truth.loc[truth["churned"], "churned_at"].notna().all()
    assert truth.loc[~truth["churned"], "churned_at"].isna().all()
    orders = data["orders"].merge(truth[["customer_id", "churned_at"]], on="customer_id")
    assert not (orders["ordered_at"] >= orders["churned_at"]).any()
    browsing = data["events"][data["events"]["type"].isin(["product_view", "add_to_cart"])]
    browsing = browsing[browsing["campaign_id"].isna()]  # a churned customer may still click
    browsing = browsing.merge(truth[["customer_id", "churned_at"]], on="customer_id")
    assert not (browsing["occurred_at"] >= browsing["churned_at"]).any()


def test_consumables_are_rebought_more_than_durables(data: dict[str, pd.DataFrame]) -> None:
    lines = data["orders"].merge(data["truth/products"], on="product_id")
    repeat = lines.groupby(["customer_id", "product_id", "is_consumable"])["order_id"].nunique() > 1
    share = repeat.groupby(level="is_consumable").mean()
    assert share[True] > 2 * share[False]


# --- co-purchase structure ------------------------------------------------------------------


def test_bundle_partners_are_bought_together_far_more_than_chance(
    data: dict[str, pd.DataFrame],
) -> None:
    orders = data["orders"]
    n_orders = orders["order_id"].nunique()
    share = orders.groupby("product_id")["order_id"].nunique() / n_orders
    bundles = data["truth/bundles"]
    together = bundles.merge(orders[["order_id", "product_id"]], on="product_id").merge(
        orders[["order_id", "product_id"]].rename(columns={"product_id": "partner_product_id"}),
        on=["order_id", "partner_product_id"],
    )
    expected = n_orders * (
        share.reindex(bundles["product_id"]).fillna(0).to_numpy()
        * share.reindex(bundles["partner_product_id"]).fillna(0).to_numpy()
    )
    assert len(together) / expected.sum() > 5


def test_next_purchase_pairs_follow_within_30_days(data: dict[str, pd.DataFrame]) -> None:
    pairs = data["truth/next_purchase"]
    shuffled = pairs.assign(
        next_product_id=pairs["next_product_id"].sample(frac=1, random_state=1).to_numpy()
    )
    lines = data["orders"][["customer_id", "product_id", "ordered_at"]]

    def follow_rate(table: pd.DataFrame) -> float:
        bought = lines.merge(table, on="product_id")
        later = lines.rename(columns={"product_id": "next_product_id", "ordered_at": "later_at"})
        joined = bought.merge(later, on=["customer_id", "next_product_id"], how="left")
        gap = joined["later_at"] - joined["ordered_at"]
        joined["hit"] = (gap > pd.Timedelta(0)) & (gap <= pd.Timedelta(days=30))
        return joined.groupby(["customer_id", "product_id", "ordered_at"])["hit"].any().mean()

    true_rate, chance = follow_rate(pairs), follow_rate(shuffled)
    assert true_rate > 0.15
    assert true_rate > 5 * chance


# --- email ----------------------------------------------------------------------------------


def _sends(data: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per sent email: local send hour distance to the preferred hour, opens."""
    events, truth = data["events"], data["truth/customers"]
    key = ["customer_id", "campaign_id"]
    sent = _of_type(events, schema.EventType.EMAIL_SENT)[[*key, "occurred_at"]]
    sent = sent.merge(data["customers"][["customer_id", "timezone"]], on="customer_id")
    how = pd.Series(0, index=sent.index)
    for tz, rows in sent.groupby("timezone"):
        local = rows["occurred_at"].dt.tz_localize("UTC").dt.tz_convert(tz)
        how[rows.index] = local.dt.day_of_week * 24 + local.dt.hour
    sent = sent.assign(how=how).merge(
        truth[["customer_id", "preferred_hour_of_week", "machine_opener"]], on="customer_id"
    )
    d = (sent["how"] - sent["preferred_hour_of_week"]).abs() % 168
    sent["distance"] = np.minimum(d, 168 - d)
    opens = _of_type(events, schema.EventType.EMAIL_OPEN)
    machine = opens["event_id"].isin(data["truth/machine_opens"]["event_id"])
    delivered = _of_type(events, schema.EventType.EMAIL_DELIVERED)[key].assign(delivered=True)
    for name, rows in (("human", opens[~machine]), ("machine", opens[machine])):
        flags = rows[key].drop_duplicates().assign(**{name: True})
        sent = sent.merge(flags, on=key, how="left")
    sent = sent.merge(delivered, on=key, how="left")
    return sent.fillna({"human": False, "machine": False, "delivered": False})


def test_human_opens_peak_near_the_preferred_hour(data: dict[str, pd.DataFrame]) -> None:
    sends = _sends(data)
    sends = sends[sends["delivered"]]
    near = sends.loc[sends["distance"] <= 2, "human"]
    far = sends.loc[sends["distance"] >= 12, "human"]
    assert len(near) > 300
    assert near.mean() > 1.8 * far.mean()


def test_machine_opens_are_fast_and_blind_to_the_hour(data: dict[str, pd.DataFrame]) -> None:
    events = data["events"]
    key = ["customer_id", "campaign_id"]
    machine = events[events["event_id"].isin(data["truth/machine_opens"]["event_id"])]
    delivered = _of_type(events, schema.EventType.EMAIL_DELIVERED)[[*key, "occurred_at"]]
    lag = machine.merge(delivered, on=key, suffixes=("", "_delivered"), validate="1:1")
    lag = lag["occurred_at"] - lag["occurred_at_delivered"]
    assert lag.between(pd.Timedelta(seconds=59), pd.Timedelta(minutes=15)).all()
    agents = machine["properties"].map(json.loads).str["user_agent"]
    assert (agents == "Mozilla/5.0").all()

    sends = _sends(data)
    mpp = sends[sends["delivered"] & sends["machine_opener"]]
    assert mpp["machine"].all()
    assert not sends.loc[~sends["machine_opener"], "machine"].any()
    near = mpp.loc[mpp["distance"] <= 2, "machine"].mean()
    far = mpp.loc[mpp["distance"] >= 12, "machine"].mean()
    assert abs(near - far) < 0.02


def test_bounced_emails_are_neither_delivered_nor_opened(data: dict[str, pd.DataFrame]) -> None:
    events = data["events"]
    key = ["customer_id", "campaign_id"]
    bounced = _of_type(events, schema.EventType.EMAIL_BOUNCED)[key]
    assert len(bounced) > 0
    later = events[events["type"].isin(["email_delivered", "email_open", "email_click"])]
    assert bounced.merge(later[key], on=key).empty


def test_nothing_is_sent_after_an_unsubscribe(data: dict[str, pd.DataFrame]) -> None:
    events = data["events"]
    unsub = _of_type(events, schema.EventType.UNSUBSCRIBE)
    assert unsub["customer_id"].is_unique
    assert len(unsub) > 10
    sent = _of_type(events, schema.EventType.EMAIL_SENT)
    after = sent.merge(unsub[["customer_id", "occurred_at"]], on="customer_id", suffixes=("", "_u"))
    assert not (after["occurred_at"] > after["occurred_at_u"]).any()
    consent = data["customers"].set_index("customer_id")["email_consent"]
    assert not consent[unsub["customer_id"]].any()


def test_only_consenting_signed_up_customers_are_emailed(data: dict[str, pd.DataFrame]) -> None:
    sent = _of_type(data["events"], schema.EventType.EMAIL_SENT)
    truth = data["truth/customers"].set_index("customer_id")
    assert truth.loc[sent["customer_id"].unique(), "consent_at_signup"].all()
    signed = data["customers"].set_index("customer_id")["signed_up_at"]
    assert (sent["occurred_at"].to_numpy() >= signed[sent["customer_id"]].to_numpy()).all()


def test_holdout_customers_receive_nothing_from_their_campaign(
    data: dict[str, pd.DataFrame],
) -> None:
    assignments = data["truth/campaign_assignments"]
    share = (assignments["group"] == "control").mean()
    assert 0.07 < share < 0.13
    control = assignments.loc[assignments["group"] == "control", ["campaign_id", "customer_id"]]
    emailed = data["events"][["campaign_id", "customer_id"]].dropna().drop_duplicates()
    assert control.merge(emailed, on=["campaign_id", "customer_id"]).empty
    treated = assignments.loc[assignments["group"] == "treatment", ["campaign_id", "customer_id"]]
    sent = _of_type(data["events"], schema.EventType.EMAIL_SENT)
    assert len(sent) == len(treated)


def test_treated_customers_buy_more_after_a_campaign_than_holdout(
    data: dict[str, pd.DataFrame],
) -> None:
    assignments = data["truth/campaign_assignments"]
    orders = data["orders"][["customer_id", "ordered_at"]].drop_duplicates()
    pairs = assignments.merge(orders, on="customer_id", how="left")
    gap = pairs["ordered_at"] - pairs["planned_send_at"]
    pairs["bought"] = (gap > pd.Timedelta(0)) & (gap <= pd.Timedelta(days=7))
    bought = pairs.groupby(["campaign_id", "customer_id", "group"])["bought"].any()
    rate = bought.groupby(level="group").mean()
    assert rate["treatment"] - rate["control"] > 0.015
    assert rate["treatment"] > 1.2 * rate["control"]
