"""The notebooks run end to end on a seeded synthetic shop and show what is really there.

`notebooks/01_exploration.ipynb` and `02_retraining.ipynb` are executed with papermill on the
venv's own kernel (ipykernel's `python3` spec runs this interpreter), with a temporary data home
injected as the `home` parameter and an empty working directory. The tests then check what the
notebooks showed against the generator's ground truth and the warehouse, and what they left in
the data home's MLflow registry; and that nothing was written anywhere else.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pandas as pd
import papermill
import pytest

from personalizer import tracking
from personalizer.config import Settings
from personalizer.data.warehouse import Warehouse

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, tmp_path: Path, **parameters: object) -> nbformat.NotebookNode:
    """Run a notebook in an empty working directory; fail on the first cell that raises."""
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    notebook = papermill.execute_notebook(
        str(NOTEBOOKS / name),
        str(tmp_path / name),
        parameters=parameters,
        kernel_name="python3",
        cwd=str(workdir),
        progress_bar=False,
    )
    errors = [
        f"{output.ename}: {output.evalue}"
        for cell in notebook.cells
        for output in cell.get("outputs", [])
        if output.output_type == "error"
    ]
    assert not errors, errors
    assert not any(workdir.iterdir()), f"the notebook wrote into its working directory: {workdir}"
    return notebook


def shown(notebook: nbformat.NotebookNode, tag: str) -> str:
    """Everything the cell tagged `tag` printed or displayed, as plain text."""
    (cell,) = [c for c in notebook.cells if tag in c.metadata.get("tags", [])]
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream":
            parts.append(output.text)
        elif "text/plain" in output.get("data", {}):
            parts.append(output.data["text/plain"])
    return "\n".join(parts)


def shown_number(text: str, label: str) -> int:
    """The first number on the line of a displayed table that starts with `label`."""
    match = re.search(rf"^{re.escape(label)}\s+(\d+)\b", text, re.MULTILINE)
    assert match, f"no row {label!r} in:\n{text}"
    return int(match.group(1))


def images(notebook: nbformat.NotebookNode) -> int:
    return sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        for output in cell.get("outputs", [])
    )


@pytest.mark.parametrize("name", ["01_exploration.ipynb", "02_retraining.ipynb"])
def test_committed_notebooks_have_no_outputs_and_a_parameters_cell(name: str) -> None:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "clear the outputs"
    assert ["parameters" in c.metadata.get("tags", []) for c in code][:1] == [True]
    assert "home = None" in code[0].source  # a temporary data home unless one is given


def test_exploration_shows_the_generated_shop_and_its_true_email_engagement(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    notebook = execute("01_exploration.ipynb", tmp_path, home=str(home), customers=400, seed=7)

    # table sizes: what the generator wrote, all of it imported into the warehouse
    manifest = json.loads((home / "synthetic" / "manifest.json").read_text())
    assert manifest["rows"]["customers"] == 400
    sizes = shown(notebook, "table-sizes")
    with Warehouse(home / "warehouse.duckdb", read_only=True) as wh:
        for table, rows in manifest["rows"].items():
            assert shown_number(sizes, table) == rows, table
            assert wh.query(f"SELECT count(*) AS n FROM {table}")["n"].iloc[0] == rows

    # one row per email, counted from the events, equals the generator's ground truth:
    # machine (Apple MPP) opens told apart from human ones
    truth = pd.read_parquet(home / "synthetic" / "truth" / "campaign_assignments.parquet")
    sent = truth[truth["group"] == "treatment"]
    engagement = shown(notebook, "engagement-rates")
    expected = {
        "sent": len(sent),
        "bounced": int(sent["bounced"].sum()),
        "delivered": int((~sent["bounced"]).sum()),
        "opened by a human": int(sent["human_open"].sum()),
        "opened by a machine": int(sent["machine_open"].sum()),
        "opened (any)": int((sent["human_open"] | sent["machine_open"]).sum()),
        "clicked": int(sent["clicked"].sum()),
        "unsubscribed": int(sent["unsubscribed"].sum()),
    }
    assert {label: shown_number(engagement, label) for label in expected} == expected
    assert expected["opened by a machine"] > 0
    assert expected["opened by a human"] > 0
    assert images(notebook) >= 3  # orders per month, orders per customer, campaigns


# Two trainings and MLflow's database migrations: 20-30 s on a shared 2-core machine.
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
def test_retraining_registers_a_candidate_and_leaves_the_best_version_champion(
    tmp_path: Path,
) -> None:
    home = tmp_path / "home"
    notebook = execute("02_retraining.ipynb", tmp_path, home=str(home), customers=500, seed=42)

    # the tracking store and registry are the data home's own SQLite database
    settings = Settings(home=home)
    assert settings.mlflow_uri.startswith("sqlite:///")
    assert (home / "mlflow.db").is_file()
    assert (home / "mlartifacts").is_dir()

    # a first champion (orders before `champion_until`), then the candidate on all the data
    registry = tracking.list_models(settings, "churn").set_index("version")
    assert list(registry.index) == [1, 2]
    assert registry["aliases"].tolist().count(tracking.CHAMPION) == 1
    champion = registry[registry["aliases"] == tracking.CHAMPION]
    # the gate's invariant: the champion has the best out-of-time AUC of the versions
    assert champion["auc"].iloc[0] == registry["auc"].max()
    assert registry[["recency_auc", "bgnbd_auc", "rfm_lightgbm_auc"]].notna().all().all()

    version = int(tracking.champion_version(settings, "churn").version)
    assert version == champion.index[0]
    assert f"champion after retraining: version {version}" in shown(notebook, "registry-after")
    assert "champion before retraining: version 1" in shown(notebook, "registry-before")
    verdict = "promoted: " if version == 2 else "not promoted: "
    assert shown(notebook, "gate").startswith(verdict)
    assert images(notebook) >= 2  # model vs baselines, churn probabilities
