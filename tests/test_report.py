"""The report: every figure, the trials page, and the page in a real headless browser."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from siamese_jax import report
from tests.conftest import REPO

FIGURES = ("curves.png", "schedules.png", "official_runs.png", "errors.png")


@pytest.fixture(scope="module")
def written(trained_omniglot, tmp_path_factory):
    """The report of the session's tiny run: (output folder, that run's eval.json result)."""
    _, workdir, result = trained_omniglot
    out = tmp_path_factory.mktemp("report")
    paths = report.write_report(str(workdir), str(out))
    assert sorted(p.name for p in paths) == sorted((*FIGURES, "trials.html"))
    return out, result


def test_every_figure_is_a_png(written):
    out, _ = written
    for name in FIGURES:
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width >= 300 and image.height >= 200, name


def test_page_is_self_contained_and_holds_every_trial(written):
    out, result = written
    page = (out / "trials.html").read_text()
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page), "the page must load nothing from outside"
    data = json.loads(re.search(r'<script id="data" type="application/json">(.*?)</script>', page, re.S).group(1))
    assert len(data["trials"]) == result["runs"]["trials"]
    assert data["runs"] == list(result["runs"]["per_run"])
    correct = sum(t["chosen"] == t["answer"] for t in data["trials"])
    assert correct == result["runs"]["correct"]
    assert all(img.startswith("data:image/png;base64,") for img in data["images"])


@pytest.fixture(scope="session")
def chromium() -> str:
    """A headless-capable Chromium on PATH (.ci/run installs Debian's package); the test is skipped without one."""
    path = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
    if path is None:
        pytest.skip("no Chromium on PATH: install Debian's 'chromium' package (apt-get install chromium; .ci/run "
                    "does) to run the browser test")
    return path


def _load(chromium: str, page: Path, fragment: str) -> tuple[str, list[str]]:
    """The DOM after the page's script ran, and the console messages it logged."""
    done = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0",
         "--dump-dom", f"{page.as_uri()}#{fragment}"],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [line for line in done.stderr.splitlines() if ":CONSOLE" in line]


@pytest.mark.slow
def test_page_in_a_headless_browser(written, chromium):
    out, result = written
    page = out / "trials.html"
    for run, numbers in result["runs"]["per_run"].items():
        dom, console = _load(chromium, page, f"run={run}&errors=0")
        assert console == [], console
        c, t = numbers["correct"], numbers["trials"]
        assert f"{run}: {c}/{t} correct ({100 * c / t:.2f}%)" in dom
        assert dom.count('<section class="trial') == t
        dom, console = _load(chromium, page, f"run={run}&errors=1")
        assert console == [] and dom.count('<section class="trial wrong"') == dom.count('<section class="trial') == t - c
    dom, _ = _load(chromium, page, "")
    runs = result["runs"]
    assert f"All runs: {runs['correct']}/{runs['trials']} correct" in dom


@pytest.mark.slow
def test_report_command_without_a_trained_workdir(tmp_path):
    done = subprocess.run([sys.executable, "-m", "siamese_jax.report", f"--workdir={tmp_path}"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode != 0 and "config.json not found" in done.stderr and "Traceback" not in done.stderr
