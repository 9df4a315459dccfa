"""The dashboard in a real browser (Debian's chromium through selenium) against a real Label
Studio project after a few rounds: what it shows must match the backend's /status."""

import os
import re
from pathlib import Path

import pytest
import requests

from ml_backend.demo.servers import BackendProcess, wait_for
from tests.helpers import FAST, annotate, digits_project, project_version

pytestmark = pytest.mark.labelstudio


def test_the_dashboard_shows_rounds_curves_and_the_stopping_signal(label_studio, digits64, tmp_path, browser):
    from selenium.webdriver.common.by import By

    ls = label_studio
    env = {
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": ls.personal_access_token(),
        **FAST,
        "STRATEGY": "auto:per_class=2",
        "STOP_KAPPA": "0.5",
        "STOP_WINDOW": "2",
    }
    with BackendProcess(tmp_path, env) as backend:
        project, ids, truth = digits_project(ls, digits64, "dashboard", 60)
        v = ls.connect_backend(project, backend.url)["model_version"]
        wait_for(lambda: project_version(ls, project) == v, 60, "version 0")
        for r in range(1, 4):  # three rounds of 8 labels
            for t in ids[8 * (r - 1) : 8 * r]:
                annotate(ls, t, truth[t])
            v = wait_for(lambda: f"-t{r}-" in (x := project_version(ls, project)) and x, 120, f"round {r}")
            wait_for(
                lambda: (
                    requests.get(f"{backend.url}/status", timeout=10).json()["projects"][str(project)][
                        "published_version"
                    ]
                    == v
                ),
                60,
                "the publish",
            )
        status = requests.get(f"{backend.url}/status", timeout=10).json()["projects"][str(project)]

        browser.get(backend.url + "/")
        section = browser.find_element(By.ID, f"project-{project}")
        assert section.find_element(By.CSS_SELECTOR, "code.served").text == v == status["model_version"]
        assert section.find_element(By.CSS_SELECTOR, "code.published").text == v
        assert section.find_element(By.CSS_SELECTOR, ".state-value").text == status["state"] == "idle"
        assert section.find_element(By.CSS_SELECTOR, "b.strategy").text == "auto"
        assert "serving badge" in section.text  # 24 labels ≥ 2 per class × 10: the regime switched
        # the prequential curve: one point per round, with its interval; κ from round 2 on
        assert len(section.find_elements(By.CSS_SELECTOR, "svg.prequential circle.point")) == 3
        assert len(section.find_elements(By.CSS_SELECTOR, "svg.prequential line.band")) == 3
        assert len(section.find_elements(By.CSS_SELECTOR, "svg.kappa circle.point")) == 2
        for chart in section.find_elements(By.CSS_SELECTOR, "svg.chart"):  # round ticks, inside the chart
            ticks = chart.find_elements(By.CSS_SELECTOR, "text.y-tick")
            assert len(ticks) >= 2 and all(re.fullmatch(r"-?\d+(\.\d{1,2})?", t.text) for t in ticks), [
                t.text for t in ticks
            ]
            assert all(t.rect["x"] >= chart.rect["x"] and t.rect["width"] > 0 for t in ticks)
        kappa_ticks = [float(t.text) for t in section.find_elements(By.CSS_SELECTOR, "svg.kappa text.y-tick")]
        assert kappa_ticks[0] <= min([0.0, *status["stopping"]["kappa"]]) and kappa_ticks[-1] >= 1.0
        rows = section.find_elements(By.CSS_SELECTOR, "table.versions tr")[1:]
        assert [row.find_elements(By.TAG_NAME, "td")[0].text for row in rows] == ["3", "2", "1"]
        counts = {
            e.get_attribute("data-label"): int(e.text)
            for e in section.find_elements(By.CSS_SELECTOR, "svg.bars text[data-label]")
        }
        expected = {str(i): 0 for i in range(10)}
        for t in ids[:24]:
            expected[str(truth[t])] += 1
        assert counts == expected
        stopping = section.find_element(By.CSS_SELECTOR, ".stopping").text
        assert status["stopping"]["message"] in stopping and "κ" in stopping
        assert section.find_elements(By.CSS_SELECTOR, "table.review tr")  # labels to review
        shot = Path(os.environ.get("DASHBOARD_SCREENSHOT", tmp_path / "dashboard.png"))
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 20_000
