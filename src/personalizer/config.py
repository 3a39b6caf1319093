"""Settings, built once at the edge (CLI, service, notebook) and passed down.

Nothing here touches the disk: paths are computed, not created.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict

DEFAULT_HOME = Path("data")
HOME_ENV = "PERSONALIZER_HOME"
THREADS_ENV = "PERSONALIZER_THREADS"


class Settings(BaseModel):
    """Where everything lives. All paths are under `home` unless given explicitly."""

    model_config = ConfigDict(frozen=True)

    home: Path = DEFAULT_HOME
    batch_rows: int = 500_000
    show_progress: bool = True

    @property
    def warehouse_path(self) -> Path:
        """The DuckDB file holding the canonical tables."""
        return self.home / "warehouse.duckdb"

    @property
    def quarantine_dir(self) -> Path:
        """Bad rows, one JSON Lines file per import, beside the warehouse."""
        return self.home / "quarantine"

    @property
    def synthetic_dir(self) -> Path:
        """Default output of `personalizer data generate`."""
        return self.home / "synthetic"

    @property
    def mlflow_uri(self) -> str:
        """MLflow tracking store (MLflow 3 refuses the plain ./mlruns file store)."""
        return f"sqlite:///{(self.home / 'mlflow.db').resolve()}"

    @classmethod
    def from_env(cls, home: Path | str | None = None, **overrides: object) -> Settings:
        """Settings from `PERSONALIZER_HOME` (default `./data`), with explicit overrides."""
        chosen = home if home is not None else os.environ.get(HOME_ENV) or DEFAULT_HOME
        return cls(home=Path(chosen), **overrides)  # type: ignore[arg-type]


def cpu_threads() -> int:
    """Threads one process may use: `PERSONALIZER_THREADS`, else the CPUs it may run on.

    LightGBM's and implicit's OpenMP threads spin while they wait, so running more of them than
    there are free cores (parallel test workers, a batch job beside the service) slows everything
    down manyfold; processes that share a machine should set `PERSONALIZER_THREADS`.
    """
    raw = os.environ.get(THREADS_ENV, "").strip()
    if raw:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(
                f"{THREADS_ENV} must be a whole number of threads, got {raw!r}"
            ) from None
        if value < 1:
            raise ValueError(f"{THREADS_ENV} must be at least 1, got {raw!r}")
        return value
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def days_from_env(name: str, default: float) -> float:
    """A positive number of days from the environment variable `name`, else `default`.

    Raises:
        ValueError: the variable is set but not a positive number, naming it and its value.
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number of days, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"{name} must be positive, got {raw!r}")
    return value
