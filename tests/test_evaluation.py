"""Offline evaluation: known answers for every metric, invariances, split definitions, tables."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console
from rich.text import Text

from personalizer.evaluation import (
    best,
    compare,
    coverage,
    default_cutoff,
    evaluate,
    evaluate_split,
    per_customer,
    render_table,
    temporal_split,
    to_markdown,
)


def recs_of(lists: dict[str, list[str]]) -> pd.DataFrame:
    """Recommendations table from {customer: [product at rank 1, rank 2, ...]}."""
    rows = [(c, r, p) for c, ps in lists.items() for r, p in enumerate(ps, start=1)]
    return pd.DataFrame(rows, columns=["customer_id", "rank", "product_id"])


def truth_of(sets: Mapping[str, Iterable[str]]) -> pd.DataFrame:
    rows = [(c, p) for c, ps in sets.items() for p in sorted(ps)]
    return pd.DataFrame(rows, columns=["customer_id", "product_id"])


def dcg(ranks: list[int]) -> float:
    return sum(1 / math.log2(r + 1) for r in ranks)


# --- metrics: known answers -------------------------------------------------------------------


def test_known_answer_truth_abc_recs_axb() -> None:
    """Truth {a,b,c}, list [a,x,b,y,z]: hits at ranks 1 and 3."""
    result = evaluate(
        recs_of({"c1": ["a", "x", "b", "y", "z"]}), truth_of({"c1": {"a", "b", "c"}}), ["c1"]
    )
    assert result["recall@10"] == pytest.approx(2 / 3)
    # DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) + 1/2 = 2.130930
    assert result["ndcg@10"] == pytest.approx(1.5 / (1.5 + 1 / math.log2(3)))
    assert result["ndcg@10"] == pytest.approx(0.703918, abs=1e-6)
    # AP = (1/1 + 2/3) / min(3, 10)
    assert result["map@10"] == pytest.approx((1 + 2 / 3) / 3)
    assert result["hit_rate@10"] == 1.0
    assert result["precision@10"] == pytest.approx(0.2)
    assert result["customers"] == 1


def test_known_answer_when_truth_is_longer_than_k() -> None:
    """Truth of 5, k=2, list [x,a]: the denominators are min(|truth|, k) = 2."""
    result = evaluate(
        recs_of({"c1": ["x", "a", "b"]}), truth_of({"c1": list("abcde")}), ["c1"], k=2
    )
    assert result["recall@2"] == pytest.approx(1 / 2)
    assert result["ndcg@2"] == pytest.approx((1 / math.log2(3)) / (1 + 1 / math.log2(3)))
    assert result["map@2"] == pytest.approx((1 / 2) / 2)
    assert result["precision@2"] == pytest.approx(1 / 2)


def test_capped_recall_is_one_for_a_full_top_k() -> None:
    """Recall@k = hits / min(|truth|, k): k hits out of 5 relevant is a perfect 1 at k=3."""
    result = evaluate(recs_of({"c1": list("abc")}), truth_of({"c1": list("abcde")}), ["c1"], k=3)
    assert result["recall@3"] == 1.0
    assert result["ndcg@3"] == pytest.approx(1.0)
    assert result["map@3"] == pytest.approx(1.0)


def test_averages_over_customers() -> None:
    recs = recs_of({"c1": ["a", "x"], "c2": ["y", "b"]})
    truth = truth_of({"c1": {"a"}, "c2": {"b", "c"}})
    result = evaluate(recs, truth, ["c1", "c2"], k=2)
    assert result["recall@2"] == pytest.approx((1 + 1 / 2) / 2)
    assert result["ndcg@2"] == pytest.approx((1 + (1 / math.log2(3)) / (1 + 1 / math.log2(3))) / 2)
    assert result["map@2"] == pytest.approx((1 + (1 / 2) / 2) / 2)
    assert result["hit_rate@2"] == 1.0
    assert result["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_per_customer_table() -> None:
    scores = per_customer(
        recs_of({"c1": ["a", "x", "b"]}), truth_of({"c1": {"a", "b", "c"}}), ["c1", "c9"]
    )
    assert scores["customer_id"].tolist() == ["c1"]
    row = scores.iloc[0]
    assert (row["n_truth"], row["hits"], row["hit"]) == (3, 2, 1.0)
    assert row["ndcg"] == pytest.approx(dcg([1, 3]) / dcg([1, 2, 3]))


# --- metrics: invariances and minimum functionality --------------------------------------------


def test_row_order_does_not_matter_only_rank() -> None:
    recs = recs_of({"c1": ["a", "x", "b", "y"], "c2": ["p", "q"]})
    truth = truth_of({"c1": {"a", "b", "c"}, "c2": {"q"}})
    shuffled = recs.sample(frac=1, random_state=3)
    assert evaluate(shuffled, truth, ["c1", "c2"]) == evaluate(recs, truth, ["c1", "c2"])
    # Moving the hits down the list (same rows, other ranks) does change the answer.
    swapped = recs.assign(rank=[2, 1, 4, 3, 1, 2])
    assert evaluate(swapped, truth, ["c1"])["ndcg@10"] < evaluate(recs, truth, ["c1"])["ndcg@10"]


def test_perfect_recommender_scores_one() -> None:
    truth = truth_of({"c1": {"a", "b"}, "c2": {"c"}, "c3": set("defghijklmnop")})
    perfect = recs_of({c: sorted(g["product_id"]) for c, g in truth.groupby("customer_id")})
    result = evaluate(perfect, truth, ["c1", "c2", "c3"], k=10)
    for name in ("recall@10", "ndcg@10", "map@10", "hit_rate@10"):
        assert result[name] == pytest.approx(1.0), name


def test_recommending_nothing_scores_zero() -> None:
    empty = recs_of({})
    result = evaluate(empty, truth_of({"c1": {"a"}, "c2": {"b"}}), ["c1", "c2"], catalog_size=5)
    assert result == {
        "recall@10": 0.0,
        "ndcg@10": 0.0,
        "map@10": 0.0,
        "hit_rate@10": 0.0,
        "precision@10": 0.0,
        "coverage@10": 0.0,
        "customers": 2,
    }


def test_customers_without_truth_are_excluded() -> None:
    recs = recs_of({"c1": ["a"], "c2": ["z"]})
    truth = truth_of({"c1": {"a"}})
    result = evaluate(recs, truth, ["c1", "c2"])
    assert result["customers"] == 1
    assert result["recall@10"] == 1.0


def test_customers_without_recommendations_count_as_zero() -> None:
    recs = recs_of({"c1": ["a"]})
    truth = truth_of({"c1": {"a"}, "c2": {"b"}})
    result = evaluate(recs, truth, ["c1", "c2"])
    assert result["customers"] == 2
    assert result["recall@10"] == pytest.approx(0.5)
    assert result["ndcg@10"] == pytest.approx(0.5)


def test_only_listed_customers_are_evaluated() -> None:
    recs = recs_of({"c1": ["a"], "c2": ["b"]})
    truth = truth_of({"c1": {"a"}, "c2": {"x"}})
    assert evaluate(recs, truth, ["c1"])["recall@10"] == 1.0
    assert evaluate(recs, truth, {"c2"})["recall@10"] == 0.0  # any iterable, sets included


def test_no_evaluable_customer_gives_nan_averages() -> None:
    result = evaluate(recs_of({"c1": ["a"]}), truth_of({}), ["c1"])
    assert result["customers"] == 0
    assert math.isnan(result["recall@10"])


def test_duplicate_truth_and_repeated_recommendations_count_once() -> None:
    truth = pd.concat([truth_of({"c1": {"a", "b"}})] * 2)
    recs = recs_of({"c1": ["a", "a", "x", "b"]})
    result = evaluate(recs, truth, ["c1"], k=4)
    assert result["recall@4"] == 1.0  # 2 distinct hits of 2
    assert result["ndcg@4"] == pytest.approx(dcg([1, 4]) / dcg([1, 2]))  # a counted at rank 1


def test_ranks_beyond_k_are_ignored() -> None:
    recs = recs_of({"c1": ["x", "y", "a"]})
    truth = truth_of({"c1": {"a"}})
    assert evaluate(recs, truth, ["c1"], k=2)["hit_rate@2"] == 0.0
    assert evaluate(recs, truth, ["c1"], k=3)["hit_rate@3"] == 1.0


def test_extra_columns_are_ignored() -> None:
    recs = recs_of({"c1": ["a", "b"]}).assign(score=[0.9, 0.1], strategy="popular")
    assert evaluate(recs, truth_of({"c1": {"b"}}), ["c1"])["map@10"] == pytest.approx(1 / 2)


def test_invalid_inputs_are_refused() -> None:
    truth = truth_of({"c1": {"a"}})
    with pytest.raises(ValueError, match="k must be"):
        evaluate(recs_of({"c1": ["a"]}), truth, ["c1"], k=0)
    with pytest.raises(ValueError, match="1-based"):
        evaluate(recs_of({"c1": ["a"]}).assign(rank=0), truth, ["c1"])
    with pytest.raises(ValueError, match="catalog_size"):
        evaluate(recs_of({"c1": ["a"]}), truth, ["c1"], catalog_size=0)


def test_capped_recall_is_not_monotone_in_k() -> None:
    """Documented property of the reference definition: one hit then a miss halves recall."""
    recs = recs_of({"c1": ["a", "x"]})
    truth = truth_of({"c1": {"a", "b", "c"}})
    assert evaluate(recs, truth, ["c1"], k=1)["recall@1"] == 1.0
    assert evaluate(recs, truth, ["c1"], k=2)["recall@2"] == 0.5


# --- coverage --------------------------------------------------------------------------------


def test_coverage_counts_distinct_products_in_top_k_of_given_customers() -> None:
    recs = recs_of({"c1": ["a", "b", "z"], "c2": ["b", "c"], "c3": ["d"]})
    assert coverage(recs, ["c1", "c2"], k=2, catalog_size=10) == pytest.approx(3 / 10)  # a,b,c
    assert coverage(recs, ["c1", "c2", "c3"], k=3, catalog_size=10) == pytest.approx(5 / 10)
    result = evaluate(recs, truth_of({"c1": {"a"}}), ["c1", "c2"], k=2, catalog_size=4)
    assert result["coverage@2"] == pytest.approx(3 / 4)


def test_coverage_is_reported_only_with_a_catalog_size() -> None:
    assert "coverage@10" not in evaluate(recs_of({"c1": ["a"]}), truth_of({"c1": {"a"}}), ["c1"])


# --- metrics: properties against a plain-Python reference ------------------------------------


def reference(lists: dict[str, list[str]], truth: dict[str, set[str]], k: int) -> dict[str, float]:
    """The metric definitions written as loops, one customer at a time."""
    totals = dict.fromkeys(("recall", "ndcg", "map", "hit_rate", "precision"), 0.0)
    evaluated = [c for c in truth if truth[c]]
    for c in evaluated:
        relevant, seen = truth[c], set()
        hits, gains, precisions = 0, 0.0, 0.0
        for rank, product in enumerate(lists.get(c, [])[:k], start=1):
            if product in relevant and product not in seen:
                hits += 1
                gains += 1 / math.log2(rank + 1)
                precisions += hits / rank
            seen.add(product)
        m = min(len(relevant), k)
        totals["recall"] += hits / m
        totals["ndcg"] += gains / dcg(list(range(1, m + 1)))
        totals["map"] += precisions / m
        totals["hit_rate"] += hits > 0
        totals["precision"] += hits / k
    return {f"{name}@{k}": total / len(evaluated) for name, total in totals.items()}


PRODUCTS = st.sampled_from(list("abcdefgh"))
CUSTOMERS = ["c1", "c2", "c3", "c4"]
LISTS = st.dictionaries(st.sampled_from(CUSTOMERS), st.lists(PRODUCTS, max_size=8))
TRUTHS = st.dictionaries(
    st.sampled_from(CUSTOMERS), st.sets(PRODUCTS, min_size=1, max_size=6), min_size=1
)


@settings(max_examples=60, deadline=None)
@given(lists=LISTS, truth=TRUTHS, k=st.integers(1, 8))
def test_vectorised_metrics_match_the_reference(
    lists: dict[str, list[str]], truth: dict[str, set[str]], k: int
) -> None:
    result = evaluate(recs_of(lists), truth_of(truth), CUSTOMERS, k=k)
    expected = reference(lists, truth, k)
    for name, value in expected.items():
        assert result[name] == pytest.approx(value), name
        assert 0.0 <= result[name] <= 1.0 + 1e-12, name
    assert result["customers"] == len(truth)


@settings(max_examples=60, deadline=None)
@given(lists=LISTS, truth=TRUTHS)
def test_hits_grow_with_k_and_capped_recall_grows_once_k_covers_the_truth(
    lists: dict[str, list[str]], truth: dict[str, set[str]]
) -> None:
    recs, truth_table = recs_of(lists), truth_of(truth)
    by_k = [
        per_customer(recs, truth_table, CUSTOMERS, k=k).set_index("customer_id")
        for k in range(1, 9)
    ]
    for small, large in itertools.pairwise(by_k):
        assert (large["hits"] >= small["hits"]).all()
        assert (large["hit"] >= small["hit"]).all()
        assert (large["hits"] / large["n_truth"] >= small["hits"] / small["n_truth"]).all()
    # Recall@k = hits / min(|T|, k) is non-decreasing in k from k = |T| on.
    for k in range(1, 8):
        covered = by_k[k - 1]["n_truth"] <= k
        assert (by_k[k]["recall"][covered] >= by_k[k - 1]["recall"][covered]).all()


# --- split -----------------------------------------------------------------------------------


def orders_of(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    """Order lines from (customer, product, date) tuples, one order per line."""
    frame = pd.DataFrame(rows, columns=["customer_id", "product_id", "ordered_at"])
    return frame.assign(
        order_id=[f"o{i}" for i in range(len(frame))],
        quantity=1.0,
        unit_price=9.5,
        ordered_at=pd.to_datetime(frame["ordered_at"], format="ISO8601"),
    )[["customer_id", "order_id", "product_id", "quantity", "unit_price", "ordered_at"]]


ORDERS = orders_of(
    [
        ("warm", "a", "2024-01-01"),
        ("warm", "b", "2024-01-15"),
        ("warm", "a", "2024-02-05"),  # repurchase
        ("warm", "c", "2024-02-10"),  # new to warm
        ("warm", "c", "2024-02-11"),  # bought twice in test: one truth row
        ("cold", "a", "2024-02-03"),
        ("lapsed", "d", "2024-01-20"),  # never comes back
        ("late", "e", "2024-04-01"),  # after a 30-day horizon
    ]
)
CUTOFF = "2024-02-01"


def test_split_sides_are_disjoint_and_respect_the_cutoff() -> None:
    split = temporal_split(ORDERS, CUTOFF)
    assert (split.train["ordered_at"] < split.cutoff).all()
    assert (split.test["ordered_at"] >= split.cutoff).all()
    assert set(split.train["order_id"]).isdisjoint(split.test["order_id"])
    assert len(split.train) + len(split.test) == len(ORDERS)
    assert split.end is None
    assert list(split.test.columns) == list(ORDERS.columns)


def test_horizon_bounds_the_test_window() -> None:
    split = temporal_split(ORDERS, CUTOFF, horizon_days=30)
    assert split.end == pd.Timestamp("2024-03-02")
    assert "late" not in set(split.test["customer_id"])
    assert len(split.train) + len(split.test) == len(ORDERS) - 1
    with pytest.raises(ValueError, match="horizon"):
        temporal_split(ORDERS, CUTOFF, horizon_days=0)


def test_truth_and_customer_groups() -> None:
    split = temporal_split(ORDERS, CUTOFF, horizon_days=30)
    assert split.truth.to_dict("list") == {
        "customer_id": ["cold", "warm", "warm"],
        "product_id": ["a", "a", "c"],
    }
    assert split.warm_customers.tolist() == ["warm"]
    assert split.cold_customers.tolist() == ["cold"]
    assert split.customers.tolist() == ["cold", "warm"]


def test_truth_new_excludes_previously_bought_and_cold_customers() -> None:
    split = temporal_split(ORDERS, CUTOFF)
    assert split.truth_new.to_dict("list") == {"customer_id": ["warm"], "product_id": ["c"]}
    truth, customers = split.targets("new")
    assert truth is split.truth_new
    assert customers.tolist() == ["warm"]
    cold_truth, cold = split.targets("cold")
    assert cold_truth["customer_id"].unique().tolist() == cold.tolist() == ["cold", "late"]
    with pytest.raises(ValueError, match="mode"):
        split.targets("bogus")  # type: ignore[arg-type]


def test_tz_aware_cutoff_is_read_as_utc() -> None:
    split = temporal_split(ORDERS, pd.Timestamp("2024-02-01 01:00", tz="Europe/Paris"))
    assert split.cutoff == pd.Timestamp("2024-02-01 00:00")


def test_evaluate_split_runs_every_mode() -> None:
    split = temporal_split(ORDERS, CUTOFF, horizon_days=30)
    recs = recs_of({"warm": ["c", "a"], "cold": ["b"]})
    results = evaluate_split(recs, split, k=2, catalog_size=5)
    assert list(results) == ["all", "new", "cold"]
    assert results["all"]["recall@2"] == 1.0  # warm customers only; the cold one is apart
    assert results["all"]["customers"] == 1
    assert results["new"]["recall@2"] == 1.0
    assert results["cold"]["recall@2"] == 0.0
    assert results["cold"]["customers"] == 1


def test_default_cutoff_leaves_a_fifth_of_the_span_at_most_90_days() -> None:
    year = orders_of([("x", "a", "2023-01-01"), ("x", "b", "2023-12-31")])
    cutoff = default_cutoff(year)
    assert cutoff == pd.Timestamp("2023-10-19")  # 364 days * 0.2 = 72.8 days, floored to midnight
    assert cutoff == cutoff.normalize()
    decade = orders_of([("x", "a", "2015-01-01"), ("x", "b", "2025-01-01 12:00")])
    assert default_cutoff(decade) == pd.Timestamp("2024-10-03")  # 90 days back, floored
    hours = orders_of([("x", "a", "2024-01-01 00:00"), ("x", "b", "2024-01-01 10:00")])
    assert default_cutoff(hours) == pd.Timestamp("2024-01-01 08:00")  # not floored
    split = temporal_split(year)
    assert len(split.train) == 1
    assert len(split.test) == 1


def test_default_cutoff_refuses_degenerate_histories() -> None:
    with pytest.raises(ValueError, match="no dated"):
        default_cutoff(orders_of([]))
    with pytest.raises(ValueError, match="one instant"):
        default_cutoff(orders_of([("x", "a", "2024-01-01"), ("y", "b", "2024-01-01")]))


# --- comparison table ------------------------------------------------------------------------

RESULTS = {
    "popular": {
        "all": {"recall@10": 0.10, "ndcg@10": 0.08, "customers": 1000},
        "new": {"recall@10": 0.02, "ndcg@10": 0.01, "customers": 600},
        "cold": {"recall@10": 0.05, "ndcg@10": 0.04, "customers": 400},
    },
    "als": {
        "cold": {"recall@10": 0.05, "ndcg@10": 0.03, "customers": 400},
        "all": {"recall@10": 0.20, "ndcg@10": 0.15, "customers": 1000},
        "new": {"recall@10": 0.06, "ndcg@10": 0.05, "customers": 600},
    },
    "repeat": {"all": {"recall@10": 0.15, "ndcg@10": 0.16, "customers": 1000}},
}


def test_compare_is_one_row_per_model_sorted_by_headline_recall() -> None:
    table = compare(RESULTS)
    assert table.index.tolist() == ["als", "repeat", "popular"]
    assert table.columns.tolist() == [
        "all/recall@10",
        "all/ndcg@10",
        "all/customers",
        "new/recall@10",
        "new/ndcg@10",
        "new/customers",
        "cold/recall@10",
        "cold/ndcg@10",
        "cold/customers",
    ]
    assert math.isnan(table.at["repeat", "new/recall@10"])
    assert compare(RESULTS, sort_by="all/ndcg@10").index.tolist() == ["repeat", "als", "popular"]
    with pytest.raises(KeyError):
        compare(RESULTS, sort_by="all/nope")


def test_best_marks_ties_and_never_counts() -> None:
    marks = best(compare(RESULTS))
    assert marks["all/recall@10"].tolist() == [True, False, False]
    assert marks["cold/recall@10"].tolist() == [True, False, True]  # tie
    assert not marks["all/customers"].any()


def test_markdown_table() -> None:
    small = compare(
        {"b": {"all": {"recall@10": 0.5, "customers": 2}}, "a|x": {"all": {"recall@10": 0.25}}}
    )
    assert to_markdown(small, digits=2) == (
        "| model | all/recall@10 | all/customers |\n"
        "| :--- | ---: | ---: |\n"
        "| b | **0.50** | 2 |\n"
        "| a\\|x | 0.25 | - |\n"
    )


def test_render_table_marks_the_best_in_the_terminal() -> None:
    rendered = render_table(compare(RESULTS), title="recommenders")
    assert rendered.row_count == 3
    assert len(rendered.columns) == 10
    console = Console(width=200, record=True, color_system=None)
    console.print(rendered)
    text = console.export_text()
    assert "recommenders" in text
    assert "0.2000" in text
    assert "1,000" in text
    first_cell = next(iter(rendered.columns[1].cells))
    assert isinstance(first_cell, Text)
    assert "bold" in str(first_cell.style)


def test_render_table_single_model_has_no_marks() -> None:
    rendered = render_table(compare({"only": {"all": {"recall@10": 0.1}}}))
    assert rendered.caption is None


def test_gain_importance_puts_the_deciding_feature_first() -> None:
    import lightgbm as lgb

    from personalizer.evaluation.importance import gain_importance

    rng = np.random.default_rng(0)
    x = pd.DataFrame({"noise": rng.random(500), "signal": rng.random(500)})
    y = (x["signal"] > 0.5).astype(int)
    params = {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": 0}
    booster = lgb.train(params, lgb.Dataset(x, y), num_boost_round=10)
    table = gain_importance({"toy": booster})
    assert table["feature"].iloc[0] == "signal"
    assert table["share"].iloc[0] > 0.8
    assert table["share"].sum() == pytest.approx(1.0)
