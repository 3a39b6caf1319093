"""`personalizer experiments ...`: analyse a test, size one, and the Hillstrom case study.

Each verb parses options, calls one library function and prints a table; bad input exits with
code 2 and a one-line message naming the field and value. The helpers are local (not imported
from `personalizer.cli`, which registers this app and would import it back).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from personalizer.terminal import console
from personalizer.terminal import fail as _fail

if TYPE_CHECKING:
    import pandas as pd

    from personalizer.experiments.assignment import SRMResult
    from personalizer.experiments.hillstrom import TargetingResult

app = typer.Typer(
    help="A/B tests: analyse results, size a test, the Hillstrom case study.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@contextmanager
def _user_errors() -> Iterator[None]:
    """Turn expected failures (bad files, columns, values) into a clear exit 2."""
    from personalizer.tracking import TrackingError

    try:
        yield
    except (ValueError, FileNotFoundError, TrackingError) as exc:
        raise _fail(str(exc)) from exc


def read_outcomes(path: Path) -> pd.DataFrame:
    """A CSV or Parquet file of per-customer outcomes.

    Raises:
        FileNotFoundError: when `path` does not exist.
        ValueError: for an extension other than .csv / .parquet, or an unreadable file.
    """
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"FILE: no such file {str(path)!r}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return pd.read_csv(path)
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise ValueError(f"FILE: cannot read {str(path)!r}: {exc}") from exc
    raise ValueError(f"FILE: expected a .csv or .parquet file, got {str(path)!r}")


def parse_weights(text: str) -> dict[str, float]:
    """``"control=1,treatment=1"`` as a dict (for the SRM check)."""
    weights: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            weights[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise ValueError(f"--weights: expected NAME=WEIGHT pairs, got {part!r}")
    return weights


def _number(value: float, kind: str) -> str:
    if value != value:  # NaN
        return ""
    return f"{value:.2%}" if kind == "rate" else f"{value:,.4f}"


def _interval(low: float, high: float, kind: str) -> str:
    if low != low:
        return ""
    return f"[{_number(low, kind)}, {_number(high, kind)}]"


def _p(value: float) -> str:
    return "" if value != value else f"{value:.3g}"


def print_analysis(table: pd.DataFrame, title: str, sequential: pd.DataFrame | None = None) -> None:
    """The per-variant table of `analyze` (and the always-valid columns) with rich."""
    out = Table(title=title)
    for name in ("metric", "variant", "n", "mean", "95% CI", "diff", "diff CI", "lift", "p"):
        out.add_column(name, justify="left" if name in ("metric", "variant") else "right")
    if sequential is not None:
        out.add_column("always-valid p", justify="right")
        out.add_column("confidence sequence", justify="right")
        keyed = sequential.set_index(["metric", "variant"])
    for row in table.itertuples(index=False):
        kind = str(row.kind)
        lift = "" if row.relative_lift != row.relative_lift else f"{row.relative_lift:+.1%}"
        cells = [
            str(row.metric),
            str(row.variant),
            f"{row.n:,}",
            _number(row.mean, kind),
            _interval(row.ci_low, row.ci_high, kind),
            "" if row.diff != row.diff else _number(row.diff, kind),
            _interval(row.diff_low, row.diff_high, kind),
            lift,
            _p(row.p_value),
        ]
        if sequential is not None:
            key = (row.metric, row.variant)
            if key in keyed.index:
                seq = keyed.loc[key]
                cells += [_p(seq["always_valid_p"]), _interval(seq["cs_low"], seq["cs_high"], kind)]
            else:
                cells += ["", ""]
        out.add_row(*cells)
    console.print(out)


def print_srm(result: SRMResult) -> None:
    """One line: counts, chi-square p-value and the verdict."""
    counts = ", ".join(f"{k} {v:,}" for k, v in result.observed.items())
    verdict = (
        "[bold red]SAMPLE RATIO MISMATCH[/]: do not trust these results"
        if result.mismatch
        else "no sample ratio mismatch"
    )
    console.print(
        f"SRM check ({counts}): chi² {result.chi2:.2f}, p {result.p_value:.3g}, {verdict}"
    )


@app.command("analyze")
def analyze_command(
    file: Annotated[Path, typer.Argument(help="CSV or Parquet, one row per customer.")],
    variant_col: Annotated[str, typer.Option(help="Column holding the variant.")] = "variant",
    control: Annotated[str, typer.Option(help="The control variant.")] = "control",
    outcome: Annotated[
        list[str] | None,
        typer.Option(help="Outcome column (repeat; default: every numeric column)."),
    ] = None,
    sequential: Annotated[
        bool, typer.Option(help="Add always-valid p-values and confidence sequences (mSPRT).")
    ] = False,
    effect_size: Annotated[
        float, typer.Option(help="mSPRT mixture scale, in standard deviations.")
    ] = 0.05,
    alpha: Annotated[float, typer.Option(help="Error level of the sequential test.")] = 0.05,
    weights: Annotated[
        str | None,
        typer.Option(help="Planned split for the SRM check, e.g. 'control=1,treatment=1'."),
    ] = None,
) -> None:
    """Per-variant rates and means with 95% intervals, each variant vs the control."""
    from personalizer.experiments.analysis import analyze
    from personalizer.experiments.assignment import srm_check
    from personalizer.experiments.sequential import analyze_sequential

    with _user_errors():
        frame = read_outcomes(file)
        table = analyze(frame, variant_col, control, outcome)
        extra = (
            analyze_sequential(frame, variant_col, control, outcome, effect_size, alpha)
            if sequential
            else None
        )
        balance = None
        if weights is not None:
            counts = frame[variant_col].astype(str).value_counts().to_dict()
            balance = srm_check(counts, parse_weights(weights))
    print_analysis(table, f"{file.name}: {len(frame):,} customers, control {control!r}", extra)
    if balance is not None:
        print_srm(balance)


@app.command("sample-size")
def sample_size_command(
    baseline: Annotated[float, typer.Option(help="Control rate, in (0, 1).")],
    mde: Annotated[
        float, typer.Option(help="Minimum detectable effect (absolute, or see --relative).")
    ],
    relative: Annotated[
        bool, typer.Option("--relative", help="Read --mde as a share of the baseline.")
    ] = False,
    alpha: Annotated[float, typer.Option(help="Significance level.")] = 0.05,
    power: Annotated[float, typer.Option(help="Power.")] = 0.8,
    ratio: Annotated[float, typer.Option(help="Treatment customers per control.")] = 1.0,
    one_sided: Annotated[bool, typer.Option("--one-sided", help="A one-sided test.")] = False,
) -> None:
    """Customers per arm for a two-proportion test."""
    from personalizer.experiments.sample_size import sample_size

    with _user_errors():
        result = sample_size(baseline, mde, relative, alpha, power, ratio, not one_sided)
    sides = "one-sided" if one_sided else "two-sided"
    console.print(
        f"{result.baseline:.2%} → {result.target:.2%} at alpha {alpha} ({sides}), power {power}: "
        f"{result.n_control:,} control + {result.n_treatment:,} treatment = "
        f"{result.total:,} customers"
    )


@app.command("hillstrom")
def hillstrom_command(
    dataset: Annotated[Path, typer.Option(help="The Hillstrom CSV.")],
    treatment: Annotated[str, typer.Option(help="Treated arm for targeting.")] = "Womens E-Mail",
    target: Annotated[str, typer.Option(help="Outcome for targeting: visit or conversion.")] = (
        "visit"
    ),
    share: Annotated[float, typer.Option(help="Share of customers to email.")] = 0.3,
    bootstraps: Annotated[int, typer.Option(help="Bootstrap replicates.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap and random picks.")] = 0,
    track: Annotated[bool, typer.Option(help="Log the results to MLflow.")] = False,
    home: Annotated[
        Path | None, typer.Option(help="Data home for --track (default: $PERSONALIZER_HOME).")
    ] = None,
) -> None:
    """Arm means with intervals, and the uplift model's top share vs random targeting."""
    from personalizer.experiments import hillstrom

    if bootstraps < 1:
        raise _fail(f"--bootstraps: must be at least 1, got {bootstraps}")
    with _user_errors():
        frame = hillstrom.read_arms(dataset)
        arms = hillstrom.arm_table(frame)
        balance = hillstrom.arm_balance(frame)
        result = hillstrom.targeting(
            dataset,
            treatment,
            hillstrom.CONTROL,
            target,
            share=share,
            bootstraps=bootstraps,
            seed=seed,
        )
    print_analysis(arms, f"Hillstrom: {len(frame):,} customers, control {hillstrom.CONTROL!r}")
    print_srm(balance)
    print_targeting(result)
    if track:
        from personalizer.config import Settings

        with _user_errors():
            run_id = hillstrom.log_run(Settings.from_env(home), arms, balance, result)
        console.print(f"logged to MLflow run {run_id}")


def print_targeting(result: TargetingResult) -> None:
    """The targeting table and a one-line verdict."""
    out = Table(
        title=(
            f"{result.treatment} vs {result.control}, incremental {result.target}s on the test "
            f"half ({result.customers:,} customers), {result.model} trained on the other half"
        )
    )
    for name in ("policy", "emailed", "uplift", "incremental", "95% CI", "per 1,000 customers"):
        out.add_column(name, justify="left" if name == "policy" else "right")
    table = result.table()
    total = table[f"incremental {result.target}s"]
    for i, row in table.iterrows():
        low, high, uplift = row["ci_low"], row["ci_high"], row["uplift"]
        out.add_row(
            str(row["policy"]),
            f"{row['emailed']:,}",
            "" if uplift != uplift else f"{uplift:.2%}",
            f"{total[i]:,.0f}",
            "" if low != low else f"[{low:,.0f}, {high:,.0f}]",
            f"{row['per 1,000 customers']:.1f}",
        )
    console.print(out)
    ratio = result.model_incremental / result.random_expected if result.random_expected else 0.0
    console.print(
        f"emailing the model's top {result.share:.0%} yields {ratio:.2f}× the incremental "
        f"{result.target}s of a random {result.share:.0%}"
    )
