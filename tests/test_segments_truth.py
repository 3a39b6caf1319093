"""The default segments on the synthetic shop, checked against its planted (latent) truth.

The shop plants each customer's type (never buys, one-time buyer), email engagement, Apple MPP
machine opener and churn. Segments only see the observable tables; these tests check that they
recover what was planted, as far as the observables allow.
"""

from __future__ import annotations

import pandas as pd
import pytest

from personalizer.data.synthetic import ShopConfig, make_catalog, simulate_chunk
from personalizer.segments.batch import evaluate_segments
from personalizer.segments.definitions import default_segments

ENGAGEMENT_TIERS = ("highly_engaged", "moderately_engaged", "dormant")


@pytest.fixture(scope="module")
def shop() -> dict[str, pd.DataFrame]:
    config = ShopConfig(n_customers=5000, seed=5, chunk_size=5000)
    tables = simulate_chunk(config, make_catalog(config), 0)
    as_of = pd.Timestamp(config.end) + pd.Timedelta(days=1)  # the end of the simulation
    members = evaluate_segments(
        default_segments(), tables["orders"], tables["events"], tables["customers"], as_of
    )
    return {
        **tables,
        "members": members,
        "truth": tables["truth/customers"].set_index("customer_id"),
    }


def _members(shop: dict[str, pd.DataFrame], segment: str) -> list[str]:
    members = shop["members"]
    return sorted(members.loc[members["segment"] == segment, "customer_id"])


def test_engagement_tiers_follow_the_planted_email_engagement(
    shop: dict[str, pd.DataFrame],
) -> None:
    truth = shop["truth"]
    means = [
        truth.loc[_members(shop, tier), "email_engagement"].mean() for tier in ENGAGEMENT_TIERS
    ]
    print("planted engagement by tier:", dict(zip(ENGAGEMENT_TIERS, means, strict=True)))
    assert means[0] > means[1] > means[2]
    assert means[0] - means[2] > 0.05


def test_machine_opens_do_not_lift_a_customer_into_an_engaged_tier(
    shop: dict[str, pd.DataFrame],
) -> None:
    truth = shop["truth"]
    overall = truth["machine_opener"].mean()
    for tier in ENGAGEMENT_TIERS[:2]:
        share = truth.loc[_members(shop, tier), "machine_opener"].mean()
        print(f"machine openers: {share:.1%} of {tier}, {overall:.1%} of all")
        assert share < overall + 0.05, tier


def test_lapsed_buyers_are_mostly_the_planted_churners(shop: dict[str, pd.DataFrame]) -> None:
    truth = shop["truth"]
    buyers = set(shop["orders"]["customer_id"])
    lapsed = _members(shop, "lapsed_90d")
    active = sorted(buyers - set(lapsed))
    churned_lapsed = truth.loc[lapsed, "churned"].mean()
    churned_active = truth.loc[active, "churned"].mean()
    print(f"planted churners: {churned_lapsed:.1%} of lapsed_90d, {churned_active:.1%} of others")
    assert churned_lapsed > 0.75
    assert churned_active < 0.25


def test_buyer_types_match_the_planted_ones(shop: dict[str, pd.DataFrame]) -> None:
    truth = shop["truth"]
    one_time = truth.loc[_members(shop, "one_time_buyer"), "one_time"].mean()
    repeat = truth.loc[_members(shop, "repeat_buyer"), "one_time"].mean()
    print(
        f"planted one-time buyers: {one_time:.1%} of one_time_buyer, {repeat:.1%} of repeat_buyer"
    )
    assert one_time > 0.7
    assert repeat < 0.15
    never = set(truth.index[truth["never_buys"]])
    buyer_segments = ("one_time_buyer", "repeat_buyer", "vip", "lapsed_30d")
    assert not never & {c for s in buyer_segments for c in _members(shop, s)}
