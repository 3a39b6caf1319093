"""MLflow tracking: runs, the non-pickle recommender pyfunc, the registry and the promotion gate.

The real engine is written elsewhere; these tests log a tiny fake engine (JSON state, known
answers) through a configurable loader, exactly as the real one is logged.
"""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import matplotlib
import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from personalizer import tracking
from personalizer.config import Settings
from personalizer.models import recommender_pyfunc

matplotlib.use("Agg")

# Deprecations raised inside MLflow itself (its SQLAlchemy mappings, its input-example check
# under pandas 3), not by this project.
pytestmark = [
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Operation with range is deprecated"),
]

# Tests on the shared store pay ~3-6 s once for MLflow's database migrations: marked slow.
slow = pytest.mark.slow

FAKE_MODULE = "fake_engine_for_tracking_tests"
LOADER = f"{FAKE_MODULE}:load_engine"
PRODUCTS = ["p1", "p2", "p3", "p4", "p5"]
PURCHASED = {"c1": ["p1", "p3"], "c2": []}

FAKE_ENGINE = textwrap.dedent(
    '''
    """A fake engine: products ranked in catalogue order, saved as JSON."""
    import json
    from pathlib import Path

    import pandas as pd

    COLUMNS = ["customer_id", "rank", "product_id", "score", "strategy"]


    class Engine:
        def __init__(self, products, purchased):
            self.products = list(products)
            self.purchased = {k: list(v) for k, v in purchased.items()}

        def recommend(self, customer_ids, n=10, exclude_purchased=False):
            rows = []
            for customer in customer_ids:
                seen = set(self.purchased.get(customer, [])) if exclude_purchased else set()
                chosen = [p for p in self.products if p not in seen][:n]
                for rank, product in enumerate(chosen, start=1):
                    rows.append((str(customer), rank, product, 1.0 / rank, "fake"))
            return pd.DataFrame(rows, columns=COLUMNS)

        def save(self, path):
            path = Path(path)
            path.mkdir(parents=True, exist_ok=True)
            state = {"products": self.products, "purchased": self.purchased}
            (path / "engine.json").write_text(json.dumps(state))


    def load_engine(path):
        state = json.loads((Path(path) / "engine.json").read_text())
        return Engine(state["products"], state["purchased"])
    '''
)


@pytest.fixture(scope="module", autouse=True)
def _no_stray_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Run from an empty folder and prove MLflow left nothing there (no ./mlflow.db, ./mlruns)."""
    cwd = tmp_path_factory.mktemp("cwd")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        yield
    assert list(cwd.iterdir()) == []


@pytest.fixture(scope="module")
def fake_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The fake engine module, importable by name (as the pyfunc's loader imports it)."""
    folder = tmp_path_factory.mktemp("fake_engine_pkg")
    (folder / f"{FAKE_MODULE}.py").write_text(FAKE_ENGINE)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        yield __import__(FAKE_MODULE)
    sys.modules.pop(FAKE_MODULE, None)


@pytest.fixture(scope="module")
def engine_dir(fake_engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved fake engine directory."""
    path = tmp_path_factory.mktemp("engine") / "engine"
    fake_engine.Engine(PRODUCTS, PURCHASED).save(path)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One data home for the module: creating an MLflow database costs about two seconds."""
    settings = Settings(home=tmp_path_factory.mktemp("store") / "home", show_progress=False)
    tracking.ensure_experiment(settings, "recommenders")  # pay for the database here, once
    return settings


@pytest.fixture(scope="module")
def logged(store: Settings, engine_dir: Path) -> Any:
    """The fake engine logged and registered once, as version 1 of "logged"."""
    return _log(store, engine_dir, "logged", 0.25)


def _log(settings: Settings, engine_dir: Path, name: str, ndcg: float) -> Any:
    return tracking.log_recommender(
        settings,
        engine_dir,
        name,
        {"ndcg@10": ndcg, "recall@10": ndcg / 2},
        input_example=pd.DataFrame({"customer_id": ["c1", "c2"]}),
        engine_loader=LOADER,
    )


def _client(settings: Settings) -> MlflowClient:
    return MlflowClient(tracking_uri=settings.mlflow_uri, registry_uri=settings.mlflow_uri)


def _model_dir(settings: Settings, version: Any) -> Path:
    """The logged model folder behind a registered version (local artifact store)."""
    model_id = version.source.removeprefix("models:/")
    location = _client(settings).get_logged_model(model_id).artifact_location
    return Path(location.removeprefix("file://"))


@slow
def test_start_run_logs_params_metrics_and_artifacts_under_the_home(
    store: Settings,
) -> None:
    import matplotlib.pyplot as plt

    settings = store
    uri_before = mlflow.get_tracking_uri()
    table = pd.DataFrame({"strategy": ["popular", "als"], "ndcg@10": [0.2, 0.31]})
    figure, axes = plt.subplots()
    axes.plot([1, 2, 3])
    with tracking.start_run(settings, "evaluation", "nightly", {"k": 10, "model": "als"}) as run:
        tracking.log_metrics({"ndcg@10": 0.31, "coverage": 0.5})
        tracking.log_table(table, "leaderboard")
        tracking.log_figure(figure, "curve")
        tracking.log_text("all good", "notes/summary.txt")
    plt.close(figure)

    client = _client(settings)
    finished = client.get_run(run.info.run_id)
    assert finished.info.status == "FINISHED"
    assert finished.data.params == {"k": "10", "model": "als"}
    assert finished.data.metrics == {"ndcg_at_10": 0.31, "coverage": 0.5}
    root = (settings.home / "mlartifacts" / "evaluation").resolve()
    assert client.get_experiment(run.info.experiment_id).artifact_location == root.as_uri()
    files = {
        p.relative_to(root / run.info.run_id / "artifacts").as_posix() for p in root.rglob("*.*")
    }
    assert files == {
        "tables/leaderboard.md",
        "tables/leaderboard.csv",
        "figures/curve.png",
        "notes/summary.txt",
    }
    markdown = (root / run.info.run_id / "artifacts/tables/leaderboard.md").read_text()
    assert markdown.splitlines()[0] == "| strategy | ndcg@10 |"
    assert "| als | 0.31 |" in markdown
    assert mlflow.get_tracking_uri() == uri_before  # restored, not left pointing at the home


@slow
def test_failed_block_marks_the_run_failed(store: Settings) -> None:
    with pytest.raises(ValueError, match="boom"), tracking.start_run(store, "failing") as run:
        raise ValueError("boom")
    assert _client(store).get_run(run.info.run_id).info.status == "FAILED"


def test_logging_outside_a_run_is_a_clear_error() -> None:
    with pytest.raises(tracking.TrackingError, match="no active run"):
        tracking.log_metrics({"ndcg@10": 0.1})


def test_corrupt_store_raises_tracking_error(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, show_progress=False)
    (tmp_path / "mlflow.db").write_bytes(b"not a database at all" * 64)
    with pytest.raises(tracking.TrackingError, match="unreadable or corrupt"):
        tracking.list_models(settings)
    blocked = Settings(home=tmp_path / "mlflow.db" / "home")
    with pytest.raises(tracking.TrackingError, match="not a usable folder"):
        tracking.ensure_experiment(blocked, "x")


def test_pyfunc_predict_honours_columns_then_params(fake_engine: Any, engine_dir: Path) -> None:
    """Unit test of the wrapper, without any tracking store."""
    from mlflow.pyfunc import PythonModelContext

    engine = fake_engine.load_engine(engine_dir)
    model = recommender_pyfunc.RecommenderModel()
    context = PythonModelContext({"engine": str(engine_dir)}, {"engine_loader": LOADER})
    model.load_context(context)
    frame = pd.DataFrame({"customer_id": ["c2", "c1"], "n": [3, 1]})
    got = model.predict(context, frame, params={"exclude_purchased": True})
    expected = pd.concat(
        [
            engine.recommend(["c2"], n=3, exclude_purchased=True),
            engine.recommend(["c1"], n=1, exclude_purchased=True),
        ],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(got, expected)
    with pytest.raises(ValueError, match=r"package\.module:function"):
        recommender_pyfunc.resolve_loader("no_colon_here")
    assert (
        recommender_pyfunc.DEFAULT_LOADER == "personalizer.models.recommenders.engine:load_engine"
    )


@slow
def test_logged_pyfunc_predicts_what_the_engine_says(
    store: Settings, logged: Any, fake_engine: Any, engine_dir: Path
) -> None:
    engine = fake_engine.load_engine(engine_dir)
    model = mlflow.pyfunc.load_model(str(_model_dir(store, logged)))
    customers = pd.DataFrame({"customer_id": ["c1", "c2"]})

    pd.testing.assert_frame_equal(model.predict(customers), engine.recommend(["c1", "c2"]))
    got = model.predict(customers, params={"n": 2, "exclude_purchased": True})
    pd.testing.assert_frame_equal(got, engine.recommend(["c1", "c2"], n=2, exclude_purchased=True))
    with_columns = customers.assign(n=[1, 1], exclude_purchased=[True, True])
    pd.testing.assert_frame_equal(
        model.predict(with_columns), engine.recommend(["c1", "c2"], n=1, exclude_purchased=True)
    )


@slow
def test_logged_model_holds_no_pickle(store: Settings, logged: Any) -> None:
    folder = _model_dir(store, logged)
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    # everything MLflow writes is text: metadata, environments, the code file, the examples
    assert files == [
        "MLmodel",
        "artifacts/engine/engine.json",
        "conda.yaml",
        "input_example.json",
        "python_env.yaml",
        "recommender_pyfunc.py",
        "requirements.txt",
        "serving_input_example.json",
    ]
    for path in folder.rglob("*"):
        if path.is_file():
            assert path.suffix not in {".pkl", ".pickle", ".joblib", ".cloudpickle"}
            assert not path.read_bytes().startswith(b"\x80"), f"{path} looks like a pickle"
    flavor = mlflow.models.Model.load(str(folder / "MLmodel")).flavors["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert "python_model" not in flavor  # the key MLflow uses for a cloudpickled model
    assert flavor["config"] == {"engine_loader": LOADER}
    assert "cloudpickle" not in (folder / "requirements.txt").read_text()


@slow
def test_versions_carry_their_metrics_and_run(store: Settings, engine_dir: Path) -> None:
    first = _log(store, engine_dir, "versions", 0.2)
    with tracking.start_run(store, "training", "als", {"factors": 64}) as run:
        second = _log(store, engine_dir, "versions", 0.3)
    assert (int(first.version), int(second.version)) == (1, 2)
    assert second.run_id == run.info.run_id  # logged into the open run, not a new one
    assert first.run_id != run.info.run_id
    assert second.tags == {"metric.ndcg_at_10": "0.3", "metric.recall_at_10": "0.15"}
    client = _client(store)
    assert client.get_run(second.run_id).data.metrics["ndcg_at_10"] == 0.3
    assert client.get_run(second.run_id).data.params["factors"] == "64"
    default = client.get_experiment_by_name("recommenders")
    assert client.get_run(first.run_id).info.experiment_id == default.experiment_id


@slow
def test_broken_engine_registers_nothing(store: Settings, tmp_path: Path) -> None:
    (tmp_path / "engine").mkdir()
    with pytest.raises(tracking.TrackingError, match="does not load"):
        tracking.log_recommender(
            store, tmp_path / "engine", "broken", {"ndcg@10": 0.9}, engine_loader=LOADER
        )
    with pytest.raises(tracking.TrackingError, match="does not exist"):
        tracking.log_recommender(store, tmp_path / "missing", "broken", {"ndcg@10": 0.9})
    assert tracking.list_models(store, "broken").empty


@slow
def test_promotion_gate_promotes_the_better_and_refuses_the_worse(
    store: Settings, engine_dir: Path
) -> None:
    v1 = _log(store, engine_dir, "gate", 0.30)
    first = tracking.promote_if_better(store, "gate", v1.version)
    assert first.promoted
    assert first.reason.startswith("no champion yet")

    v2 = _log(store, engine_dir, "gate", 0.322)
    second = tracking.promote_if_better(store, "gate", v2.version)
    assert second == tracking.PromotionDecision(
        True, "ndcg@10 0.322 >= champion v1's 0.3", "1", 0.30, 0.322
    )

    v3 = _log(store, engine_dir, "gate", 0.301)
    third = tracking.promote_if_better(store, "gate", v3.version)
    assert not third.promoted
    assert third.reason == "ndcg@10 0.301 < champion v2's 0.322"
    assert (third.champion_version, third.champion_metric, third.candidate_metric) == (
        "2",
        0.322,
        0.301,
    )
    assert int(tracking.champion_version(store, "gate").version) == int(v2.version)

    no_tag = tracking.promote_if_better(store, "gate", v3.version, metric="map@10")
    assert not no_tag.promoted
    assert no_tag.reason == "version 3 has no map@10 tag"


@slow
def test_manual_promote_and_list_models(store: Settings, engine_dir: Path) -> None:
    _log(store, engine_dir, "manual", 0.5)
    _log(store, engine_dir, "manual", 0.1)
    tracking.promote(store, "manual", 2)  # regardless of its worse metric
    assert int(tracking.champion_version(store, "manual").version) == 2
    with pytest.raises(tracking.TrackingError, match=r"has no version 7; versions: \[1, 2\]"):
        tracking.promote(store, "manual", 7)
    with pytest.raises(tracking.TrackingError, match="no registered model named 'nobody'"):
        tracking.promote(store, "nobody", 1)

    table = tracking.list_models(store, "manual")
    assert list(table.columns) == [
        "name",
        "version",
        "aliases",
        "created",
        "run_id",
        "ndcg@10",
        "recall@10",
    ]
    assert table["version"].tolist() == [1, 2]
    assert table["aliases"].tolist() == ["", "champion"]
    assert table["ndcg@10"].tolist() == [0.5, 0.1]
    assert table["created"].dt.tz is not None
    everything = tracking.list_models(store)
    assert len(everything) > len(table)
    assert "manual" in set(everything["name"])


@slow
def test_champion_engine_dir_round_trip(
    store: Settings, logged: Any, fake_engine: Any, engine_dir: Path
) -> None:
    with pytest.raises(tracking.TrackingError, match="has no champion yet"):
        tracking.champion_engine_dir(store, "logged")
    tracking.promote(store, "logged", logged.version)
    folder = tracking.champion_engine_dir(store, "logged")
    assert folder.is_relative_to(store.home.resolve() / "mlartifacts")
    assert json.loads((folder / "engine.json").read_text()) == json.loads(
        (engine_dir / "engine.json").read_text()
    )
    reloaded = fake_engine.load_engine(folder)
    pd.testing.assert_frame_equal(
        reloaded.recommend(["c1"]), fake_engine.load_engine(engine_dir).recommend(["c1"])
    )

    champion = tracking.load_champion(store, "logged")
    pd.testing.assert_frame_equal(
        champion.predict(pd.DataFrame({"customer_id": ["c2"]}), params={"n": 3}),
        reloaded.recommend(["c2"], n=3),
    )
