"""The MLflow UI and the Optuna dashboard over a finished tiny sweep, driven in a real browser
(Debian's chromium through Playwright): the runs table (in MLflow's model-training mode) shows the
trials by name with the searched params and metrics, two trials open in the compare view whose
parallel-coordinates plot draws the sweep's metric, a trial's cell diagram renders from its
artifacts, and `skillearn dashboard` plots the study's optimisation history.

Needs /usr/bin/chromium (`.ci/run` installs it; Playwright's own browser download is never
used) and the `playwright` package. Screenshots go to $SKILLEARN_SCREENSHOTS (default: the
test's tmp_path). Slow (about a minute).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import TINY, free_port, kill_group, mlflow_server, wait_http

from skillearn.platform.cli import main

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is absent (apt-get install -y chromium; `.ci/run` does)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory):
    pytest.importorskip("ray")
    root = tmp_path_factory.mktemp("ui")
    uri = f"sqlite:///{root}/mlflow.db"
    code = main(["sweep", "darts", "--samples", "2", "--no-asha", "--storage", str(root / "runs"),
                 "--tracking-uri", uri, "--name", "ui-sweep", *TINY])
    assert code == 0
    return root, uri


PARALLEL_PLOT_DRAWN = """runs => {
  const plot = document.querySelector('.js-plotly-plot');
  const trace = plot && plot._fullData && plot._fullData[0];
  if (!trace || trace.type !== 'parcoords') return false;
  const dims = trace.dimensions || [];
  return dims.length > 1 && dims.every(d => d.values && d.values.length === runs)
    && plot.querySelectorAll('.parcoords .y-axis').length === dims.length;
}"""
PLOT_AXES = "() => document.querySelector('.js-plotly-plot')._fullData[0].dimensions" \
    ".map(d => d.label)"


def _shots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("SKILLEARN_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_mlflow_ui_shows_the_sweep(browser, finished_sweep, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    root, uri = finished_sweep
    shots = _shots(tmp_path)
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("skillearn")
    trials = client.search_runs([exp.experiment_id], "tags.`skillearn.role` = 'trial'")
    assert len(trials) == 2
    ids = [run.info.run_id for run in trials]

    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    for run in trials:  # a row says what it is: skill, trial number, the searched knobs
        assert run.info.run_name.startswith("darts #"), run.info.run_name
        assert f"w_lr={float(run.data.params['w_lr']):.2g}" in run.info.run_name

    with mlflow_server(uri, root / "served", root / "server.log") as (url, _):
        page = browser.new_page(viewport={"width": 1700, "height": 1000})
        page.set_default_timeout(60_000)

        # 1. the experiment's runs table (the page `skillearn ui` prints: model-training mode, no
        # GenAI sidebar), with the searched param and the metric as columns
        page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning")
        columns = page.get_by_role("button", name="Columns", exact=True)
        columns.wait_for()
        sidebar = {name: page.get_by_role("link", name=name, exact=True).count()
                   for name in ("Models", "Judges", "Sessions", "Prompts")}
        assert sidebar == {"Models": 1, "Judges": 0, "Sessions": 0, "Prompts": 0}, sidebar
        close = page.get_by_role("button", name="Close", exact=True)
        if close.count():
            close.first.click()  # the assistant side panel
        columns.click()
        tree = page.get_by_test_id("column-selector-tree")
        for column, group in (("val_acc", "Metrics"), ("w_lr", "Parameters")):
            page.get_by_placeholder("Search columns").fill(column)
            tree.locator(f'[title^="{group} ("]').first.click()  # every match of the filter
        page.keyboard.press("Escape")
        page.get_by_text("ui-sweep", exact=True).first.wait_for()
        # the trials are nested under the sweep's parent run: expand it
        page.locator("button[data-component-id*='runnamecellrenderer']").first.click()
        for run in trials:
            page.get_by_text(run.info.run_name, exact=True).first.wait_for()
        table = page.inner_text("body")
        page.screenshot(path=str(shots / "1_runs_table.png"))
        assert "val_acc" in table and "w_lr" in table
        for run in trials:
            assert run.info.run_name in table
            w_lr = float(run.data.params["w_lr"])
            assert f"{w_lr:.5f}"[:6] in table or run.data.params["w_lr"][:6] in table

        # 2. the compare view of the two trials
        query = urllib.parse.quote(json.dumps(ids))
        experiments = urllib.parse.quote(json.dumps([exp.experiment_id]))
        page.goto(f"{url}/#/compare-runs?runs={query}&experiments={experiments}")
        page.get_by_text("Run details").first.wait_for()
        page.get_by_text(trials[1].info.run_name).first.wait_for()
        # the parallel-coordinates plot itself (not its loading skeleton): one value per run on
        # every axis, every axis drawn, and the sweep's metric as the one metric axis
        page.wait_for_function(PARALLEL_PLOT_DRAWN, arg=len(trials))
        axes = page.evaluate(PLOT_AXES)
        metric_axes = [a for a in axes if a not in trials[0].data.params]
        assert metric_axes == ["val_acc"] and "w_lr" in axes, axes
        compare = page.inner_text("body")
        page.screenshot(path=str(shots / "2_compare.png"), full_page=True)
        for run in trials:
            assert run.info.run_name in compare and run.info.run_id in compare
        assert "w_lr" in compare and "val_acc" in compare

        # 3. a trial's artifacts: the cell diagram PNG renders
        page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs/{ids[0]}/artifacts/"
                  "cell_normal.png")
        page.get_by_text("genotype.json").first.wait_for()
        page.wait_for_function(
            "() => [...document.images].some(i => i.complete && i.naturalWidth > 300)"
        )
        widths = page.eval_on_selector_all("img", "els => els.map(e => e.naturalWidth)")
        page.screenshot(path=str(shots / "3_cell_diagram.png"))
        assert max(widths) > 300, widths
        page.close()
    print(f"\nscreenshots of the MLflow UI in {shots}")


HISTORY_POINTS = "() => document.querySelectorAll('#plot-history .scatterlayer .points path')" \
    ".length"


def test_optuna_dashboard_plots_the_study(browser, finished_sweep, tmp_path: Path) -> None:
    """`skillearn dashboard STORAGE/NAME`: the study's history plot has a point per trial."""
    root, _ = finished_sweep
    shots = _shots(tmp_path)
    port = free_port()
    log = (tmp_path / "dashboard.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "skillearn.platform.cli", "dashboard", str(root / "runs" /
         "ui-sweep"), "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/api/studies", timeout=60, proc=proc)
        with urllib.request.urlopen(f"{url}/api/studies", timeout=10) as response:
            (study,) = json.load(response)["study_summaries"]
        assert study["study_name"] == "ui-sweep"
        page = browser.new_page(viewport={"width": 1700, "height": 1100})
        page.set_default_timeout(60_000)
        page.goto(f"{url}/dashboard/studies/{study['study_id']}")
        # a marker per finished trial in the history plot: drawn only from the study's data
        page.wait_for_function(f"() => ({HISTORY_POINTS})() >= 2")
        page.get_by_text("ui-sweep").first.wait_for()
        page.screenshot(path=str(shots / "4_optuna_dashboard.png"), full_page=True)
        assert page.evaluate(HISTORY_POINTS) >= 2
        page.close()
    finally:
        kill_group(proc)
        log.close()
    print(f"\nscreenshot of the Optuna dashboard in {shots}")
