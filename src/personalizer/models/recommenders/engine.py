"""The recommendation engine: strategies, the learned blend, rules and cold start, in one object.

`Engine.fit` learns in two passes. First every strategy is fitted on the data before a held-out
label window at the end of the training period; their merged candidates, labelled with what each
customer bought in that window, train a LambdaRank blend per mode ("all" products, and "new"
products the customer never bought). On part of those customers the blend is compared with every
single strategy: if it does not beat the best one, the engine says so and uses that strategy.
Then every strategy is refitted on all the data, and recommendations are made as of its end.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp

from personalizer.config import cpu_threads
from personalizer.evaluation.metrics import evaluate
from personalizer.features.interactions import Interactions, build_interactions
from personalizer.models.recommenders.base import Candidates, Recommender, is_member
from personalizer.models.recommenders.blend import (
    CustomerStats,
    ProductStats,
    add_features,
    feature_columns,
    merge_candidates,
    propose,
)
from personalizer.models.recommenders.factors import ALS, BPR
from personalizer.models.recommenders.history import Popular, PurchaseFrequency, Repeat, Trending
from personalizer.models.recommenders.item_item import (
    AlsoBought,
    Ease,
    ItemBM25,
    ItemKNN,
    NextPurchase,
)
from personalizer.models.recommenders.rules import Rules, apply_rules

log = logging.getLogger(__name__)

STRATEGIES: dict[str, type[Recommender]] = {
    cls.name: cls
    for cls in (
        Repeat,
        AlsoBought,
        NextPurchase,
        ItemBM25,
        Ease,
        ALS,
        BPR,
        Trending,
        Popular,
        PurchaseFrequency,
        ItemKNN,
    )
}
MODES = ("all", "new")
ENGINE_VERSION = 1


@dataclass(frozen=True)
class EngineConfig:
    """How the engine is built. Depth is how many candidates each strategy proposes per customer."""

    depth: dict[str, int] = field(
        default_factory=lambda: {
            "repeat": 100,
            "also_bought": 50,
            "next_purchase": 30,
            "item_bm25": 50,
            "ease": 50,
            "als": 50,
            "trending": 20,
            "popular": 20,
        }
    )
    label_days: float = 45.0
    max_label_share: float = 0.3  # label window at most this share of the history
    max_train_customers: int = 4_000  # per label window: bounds the ranker's training time
    validation_share: float = 0.25
    num_boost_round: int = 400
    early_stopping: int = 40
    learning_rate: float = 0.05
    num_leaves: int = 31
    min_data_in_leaf: int = 40
    objective: str = "lambdarank"  # or rank_xendcg, binary
    refit_full: bool = True  # retrain the chosen blend on all label customers
    ensemble: int = 3  # rankers averaged (different seeds): steadier rankings across runs
    windows: int = 4  # label windows stacked for training the blend (the latest validates)
    seed: int = 42
    batch_customers: int = 20_000
    overfetch: int = 3  # candidates kept per requested product, so rules can refill


@dataclass(frozen=True)
class _Slice:
    """One label window of training: strategies fitted before it, and what followed."""

    strategies: dict[str, Recommender]
    before: Interactions
    window: pd.DataFrame
    products: ProductStats
    people: CustomerStats


@dataclass
class Choice:
    """What the engine uses for one mode, and why."""

    model: str  # "blend" or a strategy name
    reason: str
    validation: dict[str, dict[str, float]] = field(default_factory=dict)


class Engine:
    """Strategies + blend + rules + cold start, fitted on order lines."""

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()

    # ------------------------------------------------------------------ fitting
    def _strategies(self) -> dict[str, Recommender]:
        return {name: STRATEGIES[name]() for name in self.config.depth}

    def _fit_all(self, data: Interactions, progress: Any = None) -> dict[str, Recommender]:
        fitted = {}
        for name, strat in self._strategies().items():
            fitted[name] = strat.fit(data)
            if progress is not None:
                progress()
        return fitted

    def label_cutoff(self, orders: pd.DataFrame, as_of: pd.Timestamp) -> pd.Timestamp:
        """Start of the held-out label window: `label_days` before `as_of`, at most a share of it."""
        start = pd.to_datetime(orders["ordered_at"]).min()
        span_days = max((as_of - start) / pd.Timedelta(days=1), 1.0)
        days = min(self.config.label_days, self.config.max_label_share * span_days)
        return as_of - pd.Timedelta(days=days)

    def fit(
        self,
        orders: pd.DataFrame,
        until: pd.Timestamp | None = None,
        products: pd.DataFrame | None = None,
        show_progress: bool = False,
    ) -> Engine:
        """Learn from order lines bought before `until` (default: all of them).

        Args:
            orders: canonical order lines (customer_id, order_id, product_id, quantity,
                unit_price, ordered_at).
            until: end of the training data; recommendations are made as of this moment.
            products: optional catalog (category, in_stock, price) for rules and features.
            show_progress: a progress bar over the fitting steps.
        """
        data = build_interactions(orders, until, products)
        as_of = data.as_of
        steps = (self.config.windows + 1) * len(self.config.depth) + 3
        ordered_at = pd.to_datetime(orders["ordered_at"])
        with _progress(show_progress, "training recommender", steps) as advance:
            slices = []
            end = as_of
            for _ in range(self.config.windows):
                cutoff = self.label_cutoff(orders, end)
                before = build_interactions(orders, cutoff, products)
                window = orders[((ordered_at >= cutoff) & (ordered_at < end)).to_numpy()]
                if before.n_customers == 0 or window.empty:
                    break
                stats = (ProductStats(before), CustomerStats(before))  # shared by both modes
                slices.append(_Slice(self._fit_all(before, advance), before, window, *stats))
                end = cutoff
            self.choices_: dict[str, Choice] = {}
            self.rankers_: dict[str, lgb.Booster] = {}
            self.extra_rankers_: dict[str, list[lgb.Booster]] = {}
            for mode in MODES:
                self._fit_mode(mode, slices)
                advance()
            self.strategies_ = self._fit_all(data, advance)
            self.data_ = data
            self.products_ = ProductStats(data)
            self.people_ = CustomerStats(data)
            self.prices_ = self.products_.table["item_log_price"]
            advance()
        self.fallback_ = Trending().fit(data)
        return self

    def _fit_mode(self, mode: str, slices: list[_Slice]) -> None:
        """Train the blend of one mode on the label windows; validate on the latest one."""
        cfg = self.config
        rng = np.random.default_rng(cfg.seed)
        train_parts, latest = [], None
        for number, piece in enumerate(slices):
            strategies, before, window = piece.strategies, piece.before, piece.window
            truth = _window_truth(window, before, mode)
            customers = np.sort(truth["customer_id"].unique())
            if len(customers) > cfg.max_train_customers:
                customers = np.sort(rng.choice(customers, cfg.max_train_customers, replace=False))
            if len(customers) == 0:
                continue
            frame = self._frame(
                strategies,
                before,
                before.lookup_customers(customers),
                mode,
                piece.products,
                piece.people,
            )
            label_matrix = _pairs_matrix(truth, before, customers)
            frame["label"] = is_member(
                frame["row"].to_numpy(), frame["item"].to_numpy(), label_matrix
            )
            in_valid = np.zeros(len(customers), bool)
            if number == 0:
                in_valid = rng.random(len(customers)) < cfg.validation_share
                latest = (strategies, before, truth, customers, in_valid, frame)
            part = frame[~in_valid[frame["row"].to_numpy()]]
            part = part[part.groupby("row")["label"].transform("any").to_numpy()]
            train_parts.append(part.assign(row=part["row"] + number * 10_000_000))
        if latest is None or sum(len(p) for p in train_parts) < 100:
            self.choices_[mode] = Choice(_fallback_for(mode), "too little history to learn a blend")
            return
        strategies, before, truth, customers, in_valid, frame = latest
        train = pd.concat(train_parts, ignore_index=True)
        valid = frame[in_valid[frame["row"].to_numpy()]]
        valid_fit = valid[valid.groupby("row")["label"].transform("any").to_numpy()]
        features = feature_columns(frame)
        params = {
            "objective": cfg.objective,
            "metric": "ndcg",
            "eval_at": [10],
            "learning_rate": cfg.learning_rate,
            "num_leaves": cfg.num_leaves,
            "min_data_in_leaf": cfg.min_data_in_leaf,
            "feature_fraction": 0.8,
            "bagging_fraction": 0.8,
            "bagging_freq": 1,
            "lambdarank_truncation_level": 20,
            "seed": cfg.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbose": -1,
            "num_threads": cpu_threads(),
        }
        dtrain = lgb.Dataset(
            train[features],
            train["label"].astype(int),
            group=train.groupby("row").size().to_numpy(),
        )
        dvalid = lgb.Dataset(
            valid_fit[features],
            valid_fit["label"].astype(int),
            group=valid_fit.groupby("row").size().to_numpy(),
            reference=dtrain,
        )
        booster = lgb.train(
            params,
            dtrain,
            num_boost_round=cfg.num_boost_round,
            valid_sets=[dvalid],
            callbacks=[lgb.early_stopping(cfg.early_stopping, verbose=False)],
        )
        # Honest comparison on the validation customers, against their whole truth.
        valid_customers = customers[in_valid]
        valid_truth = truth[truth["customer_id"].isin(valid_customers)]
        scores = np.asarray(booster.predict(valid[features], num_iteration=booster.best_iteration))
        results = {
            "blend": self._evaluate_ranking(
                valid, scores, before, customers, valid_truth, valid_customers
            )
        }
        for name in strategies:
            proposed = valid[f"{name}_score"].to_numpy() != 0
            ranking = -valid[f"{name}_rank"].to_numpy(np.float64)
            results[name] = self._evaluate_ranking(
                valid[proposed], ranking[proposed], before, customers, valid_truth, valid_customers
            )
        best_single = max((n for n in results if n != "blend"), key=lambda n: results[n]["ndcg@10"])
        blend, single = results["blend"]["ndcg@10"], results[best_single]["ndcg@10"]
        if blend > single:
            choice = Choice(
                "blend",
                f"blend NDCG@10 {blend:.4f} beats the best single strategy, "
                f"{best_single} ({single:.4f})",
                results,
            )
            self.rankers_[mode] = booster
        else:
            choice = Choice(
                best_single,
                f"blend NDCG@10 {blend:.4f} does not beat {best_single} "
                f"({single:.4f}): using {best_single}",
                results,
            )
        if choice.model == "blend" and cfg.refit_full:
            # The validation customers served to choose the rounds; now they train too.
            full = pd.concat(
                [train, valid_fit.assign(row=valid_fit["row"] + 5_000_000)], ignore_index=True
            )
            dfull = lgb.Dataset(
                full[features],
                full["label"].astype(int),
                group=full.groupby("row").size().to_numpy(),
            )
            rounds = max(10, int(booster.best_iteration * 1.1))
            models = [
                lgb.train({**params, "seed": cfg.seed + k}, dfull, num_boost_round=rounds)
                for k in range(cfg.ensemble)
            ]
            self.rankers_[mode] = models[0]
            self.extra_rankers_[mode] = models[1:]
        log.info("recommender mode %s: %s", mode, choice.reason)
        self.choices_[mode] = choice

    def _frame(
        self,
        strategies: dict[str, Recommender],
        data: Interactions,
        idx: np.ndarray,
        mode: str,
        products: ProductStats | None = None,
        people: CustomerStats | None = None,
    ) -> pd.DataFrame:
        exclude = data.purchased[idx] if mode == "new" else None
        proposals = propose(strategies, data, idx, self.config.depth, exclude)
        frame = merge_candidates(proposals, data.n_products, self.config.depth)
        return add_features(
            frame, data, idx, products or ProductStats(data), people or CustomerStats(data)
        )

    @staticmethod
    def _evaluate_ranking(
        frame: pd.DataFrame,
        scores: np.ndarray,
        data: Interactions,
        customers: np.ndarray,
        truth: pd.DataFrame,
        evaluated: np.ndarray,
    ) -> dict[str, float]:
        ranked = _top(frame.assign(score=scores), 10)
        recs = pd.DataFrame(
            {
                "customer_id": customers[ranked["row"].to_numpy()],
                "rank": ranked["rank"].to_numpy(),
                "product_id": data.product_ids[ranked["item"].to_numpy()],
            }
        )
        return evaluate(recs, truth, evaluated, k=10)

    # ----------------------------------------------------------------- scoring
    def recommend(
        self,
        customer_ids: list[str] | np.ndarray,
        n: int = 10,
        exclude_purchased: bool = False,
        rules: Rules | None = None,
        model: str | None = None,
    ) -> pd.DataFrame:
        """Top-n products for each customer: customer_id, rank, product_id, score, strategy.

        Customers without history get trending products (strategy `trending`); lists that rules
        leave short are refilled from the same fallback (strategy `popular`).

        Args:
            customer_ids: as given; `12346.0` also finds `12346`. The output keeps them as given.
            n: products per customer.
            exclude_purchased: only products the customer never bought.
            rules: business rules (default: just `exclude_purchased`).
            model: force one strategy (or "blend") instead of the engine's choice, for comparison.
        """
        rules = rules or Rules(exclude_purchased=exclude_purchased)
        if exclude_purchased and not rules.exclude_purchased:
            rules = Rules(
                **{**asdict(rules), "exclude_purchased": True, "recently_sent": rules.recently_sent}
            )
        ids = [str(c) for c in customer_ids]
        frames = []
        step = self.config.batch_customers
        for start in range(0, len(ids), step):
            frames.append(self._recommend_batch(ids[start : start + step], n, rules, model))
        if not frames:
            return _empty_recs()
        return pd.concat(frames, ignore_index=True)

    def _recommend_batch(
        self, ids: list[str], n: int, rules: Rules, model: str | None = None
    ) -> pd.DataFrame:
        data = self.data_
        mode = "new" if rules.exclude_purchased else "all"
        idx = data.lookup_customers([_normal_id(c) for c in ids])
        exclude = rules.exclusion(data, idx)
        sent = rules.sent_matrix(data, ids)
        if sent is not None:
            exclude = sent if exclude is None else (exclude + sent).tocsr()
        allowed = rules.allowed_products(data, np.expm1(self.prices_))
        # Fetch extra candidates only when rules may remove some after ranking.
        may_remove = (not allowed.all()) or sent is not None or rules.max_per_category is not None
        depth = n * self.config.overfetch if may_remove else n
        known = np.flatnonzero(idx >= 0)
        ranked = self._rank_known(idx[known], mode, depth, model)
        ranked["row"] = known[ranked["row"].to_numpy()]
        kept = apply_rules(ranked, n, allowed, data.categories, rules, exclude)
        kept = self._refill(kept, len(ids), n, allowed, rules, exclude, idx)
        kept = kept.sort_values(["row", "rank_order"], kind="stable")
        rank = kept.groupby("row").cumcount().to_numpy() + 1
        return pd.DataFrame(
            {
                "customer_id": np.asarray(ids, dtype=object)[kept["row"].to_numpy()],
                "rank": rank.astype(np.int32),
                "product_id": data.product_ids[kept["item"].to_numpy()].astype(object),
                "score": kept["score"].to_numpy(np.float32),
                "strategy": kept["strategy"].to_numpy(),
            }
        )

    def _rank_known(
        self, idx: np.ndarray, mode: str, depth: int, model: str | None = None
    ) -> pd.DataFrame:
        """Ranked candidates (row, item, score, strategy, rank_order) for known customers."""
        if len(idx) == 0:
            return pd.DataFrame(
                {"row": [], "item": [], "score": [], "strategy": [], "rank_order": []}
            )
        choice = model or self.choices_[mode].model
        if choice == "blend" and mode not in self.rankers_:
            raise ValueError(f"no blend was trained for mode {mode!r}")
        if choice != "blend":
            exclude = self.data_.purchased[idx] if mode == "new" else None
            cand = self.strategies_[choice].candidates(self.data_, idx, depth, exclude)
            return _frame_from(cand, choice)
        frame = self._frame(self.strategies_, self.data_, idx, mode, self.products_, self.people_)
        booster = self.rankers_[mode]
        # One float64 copy for every ranker (what LightGBM makes of the frame anyway), and the
        # threads this process may use: the rankers' inference is most of the scoring time.
        inputs = np.ascontiguousarray(frame[booster.feature_name()].to_numpy(np.float64))
        boosters = [booster, *self.extra_rankers_.get(mode, [])]
        threads = cpu_threads()
        frame["score"] = np.mean(
            [
                b.predict(inputs, num_iteration=b.best_iteration, num_threads=threads)
                for b in boosters
            ],
            axis=0,
        )
        frame["strategy"] = _best_proposer(frame, list(self.config.depth))
        ranked = _top(frame, depth)
        ranked["rank_order"] = ranked["rank"]
        return ranked[["row", "item", "score", "strategy", "rank_order"]]

    def _refill(
        self,
        kept: pd.DataFrame,
        n_rows: int,
        n: int,
        allowed: np.ndarray,
        rules: Rules,
        exclude: sp.csr_matrix | None,
        idx: np.ndarray,
    ) -> pd.DataFrame:
        have = np.bincount(kept["row"].to_numpy(dtype=np.int64), minlength=n_rows)
        short = np.flatnonzero(have < n)
        if len(short) == 0:
            return kept
        depth = (
            n
            + (int(np.diff(exclude.indptr).max()) if exclude is not None and exclude.nnz else 0)
            + int((~allowed).sum())
        )
        cand = self.fallback_.candidates(self.data_, short, min(depth, self.data_.n_products), None)
        fill = _frame_from(cand, "popular")
        fill["row"] = short[fill["row"].to_numpy()]
        cold = idx[fill["row"].to_numpy()] < 0
        fill.loc[cold, "strategy"] = "trending"
        fill["rank_order"] = fill["rank_order"] + 10_000_000  # after the personal ones
        # Skip what the row already holds, then apply the rules and take what is missing.
        merged = pd.concat([kept, fill], ignore_index=True)
        merged = merged.drop_duplicates(["row", "item"], keep="first")
        merged = merged.sort_values(["row", "rank_order"], kind="stable")
        return apply_rules(merged, n, allowed, self.data_.categories, rules, exclude)

    def similar(self, product_ids: list[str], n: int = 10) -> pd.DataFrame:
        """Products bought together with the given ones (a product page, a cart)."""
        strat = self.strategies_.get("also_bought")
        index = self.data_.product_index
        known = np.array([index[p] for p in product_ids if p in index], dtype=np.int64)
        if strat is None or len(known) == 0:
            return _empty_recs().drop(columns=["customer_id"])
        cand = strat.similar(known, n)  # type: ignore[attr-defined]
        return pd.DataFrame(
            {
                "rank": cand.rank,
                "product_id": self.data_.product_ids[cand.item],
                "score": cand.score,
                "strategy": "also_bought",
            }
        )

    # -------------------------------------------------------------- persistence
    def save(self, path: Path) -> None:
        """Write the engine as a folder of Parquet, npz, JSON and LightGBM text files."""
        path.mkdir(parents=True, exist_ok=True)
        data = self.data_
        data.lines.to_parquet(path / "lines.parquet", index=False)
        np.savez(
            path / "index.npz",
            customer_ids=data.customer_ids,
            product_ids=data.product_ids,
            in_stock=data.in_stock,
            categories=np.array([c if c is not None else "" for c in data.categories], dtype=str),
        )
        for name, strat in self.strategies_.items():
            strat.save(path / "strategies" / name)
        for mode, booster in self.rankers_.items():
            for k, model in enumerate([booster, *self.extra_rankers_.get(mode, [])]):
                name = f"blend_{mode}.txt" if k == 0 else f"blend_{mode}_{k}.txt"
                model.save_model(str(path / name), num_iteration=model.best_iteration)
        meta = {
            "engine_version": ENGINE_VERSION,
            "as_of": data.as_of.isoformat(),
            "config": asdict(self.config),
            "choices": {m: asdict(c) for m, c in self.choices_.items()},
        }
        (path / "engine.json").write_text(json.dumps(meta, indent=1, default=float))

    @classmethod
    def load(cls, path: Path) -> Engine:
        """Read an engine written by `save`."""
        meta = json.loads((path / "engine.json").read_text())
        engine = cls(EngineConfig(**meta["config"]))
        with np.load(path / "index.npz", allow_pickle=False) as npz:
            categories = npz["categories"].astype(object)
            categories[categories == ""] = None
            data = Interactions(
                customer_ids=npz["customer_ids"],
                product_ids=npz["product_ids"],
                lines=pd.read_parquet(path / "lines.parquet"),
                as_of=pd.Timestamp(meta["as_of"]),
                categories=categories,
                in_stock=npz["in_stock"],
            )
        engine.data_ = data
        engine.strategies_ = {
            name: STRATEGIES[name].load(path / "strategies" / name) for name in engine.config.depth
        }
        engine.choices_ = {m: Choice(**c) for m, c in meta["choices"].items()}
        engine.rankers_ = {
            mode: lgb.Booster(model_file=str(path / f"blend_{mode}.txt"))
            for mode in MODES
            if (path / f"blend_{mode}.txt").exists()
        }
        engine.extra_rankers_ = {
            mode: [lgb.Booster(model_file=str(p)) for p in sorted(path.glob(f"blend_{mode}_*.txt"))]
            for mode in engine.rankers_
        }
        engine.products_ = ProductStats(data)
        engine.people_ = CustomerStats(data)
        engine.prices_ = engine.products_.table["item_log_price"]
        engine.fallback_ = Trending().fit(data)
        return engine


def load_engine(path: Path) -> Engine:
    """The engine saved in folder `path`."""
    return Engine.load(Path(path))


# ---------------------------------------------------------------------- helpers
def _fallback_for(mode: str) -> str:
    return "repeat" if mode == "all" else "als"


def _normal_id(value: str) -> str:
    """Ids as the importer stores them: `12346.0` → `12346`."""
    text = value.strip()
    if text.endswith(".0") and text[:-2].lstrip("-").isdigit():
        return text[:-2]
    return text


def _window_truth(window: pd.DataFrame, before: Interactions, mode: str) -> pd.DataFrame:
    """What known customers bought in the label window (new products only in mode `new`)."""
    truth = window[["customer_id", "product_id"]].drop_duplicates()
    truth = truth[truth["customer_id"].isin(before.customer_index)]
    if mode == "new":
        rows = before.lookup_customers(truth["customer_id"].to_numpy())
        cols = truth["product_id"].map(before.product_index)
        had = np.zeros(len(truth), bool)
        known = cols.notna().to_numpy()
        had[known] = is_member(rows[known], cols[known].astype(int).to_numpy(), before.purchased)
        truth = truth[~had]
    return truth


def _pairs_matrix(truth: pd.DataFrame, data: Interactions, customers: np.ndarray) -> sp.csr_matrix:
    """Query rows (customers, in order) × products of `data`: 1 for (customer, product) in truth."""
    row_of = pd.Series(np.arange(len(customers)), index=customers)
    rows = truth["customer_id"].map(row_of)
    cols = truth["product_id"].map(data.product_index)
    ok = (rows.notna() & cols.notna()).to_numpy()
    return sp.csr_matrix(
        (
            np.ones(int(ok.sum()), np.float32),
            (rows[ok].astype(int).to_numpy(), cols[ok].astype(int).to_numpy()),
        ),
        shape=(len(customers), data.n_products),
    )


def _top(frame: pd.DataFrame, k: int) -> pd.DataFrame:
    """The k best-scored rows per `row`, with a 1-based `rank`."""
    order = np.lexsort(
        (frame["item"].to_numpy(), -frame["score"].to_numpy(), frame["row"].to_numpy())
    )
    ranked = frame.iloc[order]
    rank = ranked.groupby("row").cumcount().to_numpy() + 1
    ranked = ranked.assign(rank=rank)
    return ranked[rank <= k]


def _best_proposer(frame: pd.DataFrame, names: list[str]) -> np.ndarray:
    """For each candidate, the strategy that ranked it highest."""
    present = [n for n in names if f"{n}_rank" in frame]
    ranks = np.column_stack([frame[f"{n}_rank"].to_numpy() for n in present])
    return np.asarray(present, dtype=object)[ranks.argmin(axis=1)]


def _frame_from(cand: Candidates, strategy: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "row": cand.row,
            "item": cand.item,
            "score": cand.score,
            "strategy": strategy,
            "rank_order": cand.rank,
        }
    )


def _empty_recs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": pd.Series(dtype=object),
            "rank": pd.Series(dtype=np.int32),
            "product_id": pd.Series(dtype=object),
            "score": pd.Series(dtype=np.float32),
            "strategy": pd.Series(dtype=object),
        }
    )


class _progress:
    """A rich progress bar over fitting steps (a no-op when disabled)."""

    def __init__(self, enabled: bool, label: str, total: int) -> None:
        self.enabled, self.label, self.total = enabled, label, total

    def __enter__(self) -> Any:
        if not self.enabled:
            return lambda: None
        from rich.progress import Progress

        self._bar = Progress(transient=True)
        self._bar.__enter__()
        task = self._bar.add_task(self.label, total=self.total)
        return lambda: self._bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self._bar.__exit__(None, None, None)
