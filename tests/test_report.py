"""The HTML report: every section renders with data and without, the page fetches nothing, and a
real browser (Debian's chromium driven by Playwright) shows its headings and charts.

A 600-customer synthetic shop is imported, the churn and send-time models are trained and the
segments evaluated twice through the command line; `personalizer report` then runs on that home.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from conftest import invoke
from personalizer.config import Settings
from personalizer.report import sources
from personalizer.report.build import build_report, write_report
from personalizer.report.cli import report
from personalizer.report.sources import ReportData

runner = CliRunner()
TITLES = (
    "Email KPIs",
    "Model quality over time",
    "Segment sizes and movements",
    "Flow funnels",
    "Experiment results",
)
EXTERNAL = re.compile(r"""src=["']?https?:|<link\b|<script\b|@import|url\(\s*["']?https?:""", re.I)
AS_OF = pd.Timestamp("2026-11-02 12:00")


def report_app() -> typer.Typer:
    app = typer.Typer()
    app.command()(report)
    return app


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.fail("Debian's chromium is needed for the browser tests: `make test` installs it")
    return path


def sections_of(page: str) -> dict[str, bool]:
    """Section anchor -> whether it says it has no data."""
    found = re.findall(r'<section class="report" id="(\w+)" data-empty="(true|false)"', page)
    return {anchor: empty == "true" for anchor, empty in found}


def assert_self_contained(page: str) -> None:
    assert not EXTERNAL.search(page), EXTERNAL.search(page)
    assert 'src="http' not in page
    assert "<link" not in page
    assert "<script src" not in page


# ------------------------------------------------------------------------------ empty home
def test_on_an_empty_home_every_section_renders_and_says_there_is_no_data_yet(
    settings: Settings,
) -> None:
    result = write_report(settings, as_of=AS_OF)
    page = result.path.read_text(encoding="utf-8")
    assert result.path == settings.home / "report.html"
    assert sections_of(page) == dict.fromkeys(
        ["kpis", "models", "segments", "funnels", "experiments"], True
    )
    for title in TITLES:
        assert title in page
    assert page.count("no data yet") == len(TITLES)  # in the table of contents
    assert "2026-11-02 12:00 UTC" in page
    assert str(settings.home.resolve()) in page
    assert_self_contained(page)
    assert result.empty_sections == list(TITLES)
    # reading an empty home creates nothing there but the report itself
    assert sorted(p.name for p in settings.home.iterdir()) == ["report.html"]


def test_real_time_events_alone_give_kpis_and_attributed_revenue(settings: Settings) -> None:
    from personalizer.data.event_store import ingest_events, open_event_store

    def ev(n: int, kind: str, minutes: int, **extra: object) -> dict[str, object]:
        at = (pd.Timestamp("2026-11-01 10:00") + pd.Timedelta(minutes=minutes)).isoformat()
        return {"event_id": f"e{n}", "customer_id": "c1", "type": kind, "occurred_at": at, **extra}

    with open_event_store(settings) as store:
        result = ingest_events(
            store,
            [
                ev(1, "email_sent", 0, campaign_id="winback.1"),
                ev(2, "email_delivered", 1, campaign_id="winback.1"),
                ev(3, "email_open", 30, campaign_id="winback.1"),
                ev(
                    4,
                    "email_click",
                    31,
                    properties={"url": "https://s.test/?utm_campaign=winback.1"},
                ),
                ev(5, "purchase", 60, properties={"order_id": "o9", "value": 1500.0}),
            ],
        )
    assert result.accepted == 5
    data = sources.load_report_data(settings)
    assert data.orders[["order_id", "revenue"]].values.tolist() == [["o9", 1500.0]]
    page = build_report(data, home=str(settings.home), as_of=AS_OF)
    assert "1,500.00" in page
    assert sections_of(page)["kpis"] is False


def test_the_command_refuses_a_window_that_is_not_positive(settings: Settings) -> None:
    result = runner.invoke(report_app(), ["--home", str(settings.home), "--attribution-days", "0"])
    assert result.exit_code == 2
    assert "positive" in result.output


# ------------------------------------------------------------------- hand-built, every section
T0 = pd.Timestamp("2026-10-01 08:00")


def handmade_data() -> ReportData:
    """Two flow steps and a newsletter, an A/B test, two model versions, two evaluations."""
    rows = []
    for i in range(40):
        customer, step = f"c{i:02d}", "1" if i < 30 else "2"
        props = {"experiment": "subject", "variant": "A" if i % 2 else "B"}
        rows.append((customer, "email_sent", 0, f"welcome.{step}", props))
        rows.append((customer, "email_delivered", 0.01, f"welcome.{step}", {}))
        rows.append((customer, "email_open", 0.1, f"welcome.{step}", {"user_agent": "Mozilla/5.0"}))
        if i % 3 == 0:
            rows.append((customer, "email_open", 2, f"welcome.{step}", {"user_agent": "Outlook"}))
        if i % 6 == 0:
            link = {"url": f"https://s.test/p?utm_campaign=welcome.{step}"}
            rows.append((customer, "email_click", 2.1, None, link))
        rows.append((customer, "email_sent", 100, "news", {}))
    events = pd.DataFrame(
        {
            "event_id": [f"e{i}" for i in range(len(rows))],
            "customer_id": [r[0] for r in rows],
            "type": [r[1] for r in rows],
            "occurred_at": [T0 + pd.Timedelta(hours=r[2]) for r in rows],
            "campaign_id": [r[3] for r in rows],
            "properties": [json.dumps(r[4]) for r in rows],
        }
    )
    orders = pd.DataFrame(
        {
            "order_id": ["o1", "o2", "o3"],
            "customer_id": ["c00", "c06", "c07"],
            "ordered_at": [T0 + pd.Timedelta(hours=5)] * 3,
            "revenue": [1234.5, 20.0, 99.0],
        }
    )
    queue = pd.DataFrame(
        {
            "customer_id": [f"c{i:02d}" for i in range(45)],
            "flow": "welcome",
            "step": ["1"] * 30 + ["2"] * 15,
            "template": "welcome",
            "send_at": T0,
            "decision_id": [f"d{i}" for i in range(45)],
        }
    )
    versions = pd.DataFrame(
        {
            "name": ["churn", "churn"],
            "version": [1, 2],
            "aliases": ["", "champion"],
            "created": pd.to_datetime(["2026-09-01", "2026-10-01"], utc=True),
            "run_id": ["r1", "r2"],
            "auc": [0.81, 0.86],
            "recency_auc": [0.7, 0.71],
        }
    )
    first, second = T0 - pd.Timedelta(days=10), T0 + pd.Timedelta(days=10)
    memberships = pd.DataFrame(
        {
            "customer_id": ["c00", "c01", "c02", "c03"],
            "segment": ["vip", "vip", "lapsed", "vip"],
            "entered_at": [first, first, first, second],
            "exited_at": [pd.NaT, second, pd.NaT, pd.NaT],
        }
    )
    experiments = pd.DataFrame(
        {
            "experiment": ["subject", "subject"],
            "variant": ["A", "B"],
            "metric": ["click_rate", "click_rate"],
            "value": [0.05, 0.08],
            "ci_low": [0.03, 0.05],
            "ci_high": [0.07, 0.11],
            "p_value": [None, 0.02],
        }
    )
    return ReportData(events, orders, versions, {}, memberships, queue, experiments)


def test_with_data_every_section_has_its_tables_and_charts() -> None:
    page = build_report(handmade_data(), home="/srv/shop", as_of=AS_OF)
    assert sections_of(page) == dict.fromkeys(
        ["kpis", "models", "segments", "funnels", "experiments"], False
    )
    assert page.count("<svg") == 6  # campaigns, models, sizes, movements, funnels, experiments
    assert "1,234.50" in page  # thousands separators
    assert "machine opens ⚑" in page
    assert "welcome.1" in page
    assert "subject" in page
    assert "/srv/shop" in page
    assert_self_contained(page)
    assert len(page) < 2_000_000


def test_without_given_results_the_experiments_are_analysed_from_the_tagged_sends() -> None:
    data = replace(handmade_data(), experiments=None)
    page = build_report(data, home="/srv/shop", as_of=AS_OF)
    assert sections_of(page)["experiments"] is False
    assert "subject · clicked" in page
    assert "subject · converted" in page


def test_the_queue_is_read_once_journeys_have_run(settings: Settings) -> None:
    from personalizer.journeys.runs import run_journeys

    assert sources.load_queue(settings) is None  # nothing run, nothing created
    assert not (settings.home / "journeys").exists()
    run_journeys(settings, pd.Timestamp("2026-01-01"))
    queue = sources.load_queue(settings)
    assert queue is not None
    assert list(queue.columns[:6]) == [
        "customer_id",
        "flow",
        "step",
        "template",
        "send_at",
        "decision_id",
    ]


def open_in_browser(path: Path, shot: Path, expected_charts: int) -> None:
    """Open the page in headless chromium: title, visible headings, drawn charts, no requests."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors: list[str] = []
        requests: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(path.resolve().as_uri())
        assert page.title().startswith("personalizer report")
        for title in TITLES:
            heading = page.get_by_role("heading", name=re.compile(re.escape(title)))
            assert heading.is_visible(), title
        charts = page.locator("svg.chart")
        assert charts.count() == expected_charts
        for i in range(charts.count()):
            box = charts.nth(i).bounding_box()
            assert box is not None
            assert box["width"] > 200, box
            assert box["height"] > 80, box
        page.get_by_role("link", name="Flow funnels").click()
        assert page.locator("#funnels").is_visible()
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        assert not errors
        assert requests == [path.resolve().as_uri()]  # the page itself, nothing else
        browser.close()


def test_the_report_with_every_section_opens_in_a_real_browser(tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    out.write_text(build_report(handmade_data(), home="/srv/shop", as_of=AS_OF), "utf-8")
    open_in_browser(out, tmp_path / "report.png", expected_charts=6)


# ------------------------------------------------------------------ a synthetic shop's home
@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("report") / "home"
    invoke(home, "data", "generate", "--customers", "600", "--seed", "9")
    invoke(home, "data", "import", str(home / "synthetic"))
    for model in ("churn", "send-time"):
        invoke(home, "train", model)
    invoke(home, "segments", "evaluate", "--as-of", "2026-08-01")
    invoke(home, "segments", "evaluate", "--as-of", "2026-10-31")
    return home


@pytest.mark.slow
def test_the_report_on_a_shop_shows_kpis_models_and_segments_in_a_browser(
    home: Path, tmp_path: Path
) -> None:
    out = tmp_path / "shop.html"
    result = runner.invoke(report_app(), ["--home", str(home), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert re.search(r"[\d,]+ sends, human open rate [\d.]+%", result.output)
    page = out.read_text(encoding="utf-8")
    shown = sections_of(page)
    assert [shown["kpis"], shown["models"], shown["segments"]] == [False, False, False]
    assert_self_contained(page)
    assert len(page.encode()) < 2_000_000
    assert "churn · auc" in page
    assert "send_time · time_of_day_hit" in page
    assert "Entries and exits at the latest evaluation" in page  # two evaluations: movements
    assert 'class="num machine"' in page  # the machine-open column is flagged
    charts = 4 + (not shown["funnels"]) + (not shown["experiments"])
    open_in_browser(out, tmp_path / "shop.png", expected_charts=charts)


@pytest.mark.slow
def test_since_and_the_window_change_what_the_report_counts(home: Path) -> None:
    settings = Settings(home=home)
    everything = write_report(settings, home / "all.html", as_of=AS_OF)
    recent = write_report(
        settings, home / "recent.html", since=pd.Timestamp("2026-06-01"), as_of=AS_OF
    )
    short = write_report(settings, home / "short.html", attribution_days=0.5, as_of=AS_OF)
    assert 0 < recent.total["sends"] < everything.total["sends"]
    assert short.total["revenue"] <= everything.total["revenue"]
    assert everything.total["revenue"] > 0
    assert "emails sent since <b>2026-06-01</b>" in (home / "recent.html").read_text("utf-8")
