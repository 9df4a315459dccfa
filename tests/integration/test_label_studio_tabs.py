"""The Data Manager tabs the backend keeps in a real Label Studio 1.23.2: the queue ordered by
score, and the review tab of suspicious labels, which loses a task when a person saves it again."""

import os
import shutil
from pathlib import Path

import pytest
import requests

from ml_backend.demo.servers import BackendProcess, wait_for
from ml_backend.service.tabs import QUEUE_TAB, REVIEW_TAB, is_review_tab
from tests.helpers import FAST, LABELS, annotate, log_in, project_version

pytestmark = pytest.mark.labelstudio


def tabs(ls, project):
    return {v["data"].get("title"): v for v in ls.api("GET", "/api/dm/views/", params={"project": project})}


def tab_tasks(ls, project, view):
    data = ls.api("GET", "/api/tasks/", params={"project": project, "view": view["id"], "page_size": 100})
    return sorted(t["id"] for t in (data["tasks"] if isinstance(data, dict) else data))


def status(backend, project):
    return requests.get(f"{backend.url}/status", timeout=10).json()["projects"][str(project)]


def show_in_browser(browser, ls, project, view, shot):
    """Log in to Label Studio's UI and open the tab; returns the page's text once the tab shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    log_in(browser, ls)
    browser.get(f"{ls.url}/projects/{project}/data?tab={view['id']}")
    title = view["data"]["title"]
    WebDriverWait(browser, 60).until(lambda d: title in d.find_element(By.TAG_NAME, "body").text)
    browser.save_screenshot(str(shot))
    from PIL import Image

    with Image.open(shot) as full:  # the tab bar and the rows, not the empty page below them
        full.crop((0, 0, full.width, min(full.height, 420))).save(shot)
    return browser.find_element(By.TAG_NAME, "body").text


def test_queue_tab_and_review_tab_follow_the_rounds(label_studio, digits64, tmp_path, request):
    ls = label_studio
    env = {
        "LABEL_STUDIO_URL": ls.url,
        "LABEL_STUDIO_API_KEY": ls.personal_access_token(),
        **FAST,
        "REVIEW_TOP": "5",
        "REVIEW_METHOD": "loss",  # 12 labels over 10 classes: too few for held-out heads to judge
        "TRAIN_STEPS": "300",
    }
    with BackendProcess(tmp_path, env) as backend:
        project = ls.create_project("tabs", LABELS)
        distinct = ls.upload_files(project, [(n, d) for n, d, _ in digits64[:16]])
        truth = {t: digits64[i][2] for i, t in enumerate(distinct)}
        # the same two images twice: one copy labeled right, the other wrong; no head can fit both
        twins = ls.upload_files(project, [(f"twin-{n}", d) for n, d, _ in digits64[:2]])
        v0 = ls.connect_backend(project, backend.url)["model_version"]
        wait_for(lambda: project_version(ls, project) == v0, 60, "version 0")
        queue = wait_for(lambda: tabs(ls, project).get(QUEUE_TAB), 30, "the queue tab")
        assert queue["data"]["ordering"] == ["tasks:predictions_score"]
        assert "tasks:predictions_score" not in queue["data"]["hiddenColumns"]["explore"]

        for t in distinct[:10]:
            annotate(ls, t, truth[t])
        wrong = {twins[0]: (truth[distinct[0]] + 1) % 10, twins[1]: (truth[distinct[1]] + 1) % 10}
        for t, label in wrong.items():
            annotate(ls, t, label)
        v1 = wait_for(lambda: "-t1-" in (v := project_version(ls, project)) and v, 120, "round 1")
        st = wait_for(lambda: (s := status(backend, project))["published_version"] == v1 and s, 60, "the publish")
        flagged = sorted(int(r["task"]) for r in st["review"])
        assert all(r["p_label"] < 0.5 for r in st["review"]) and len(flagged) <= 5
        assert all({distinct[i], twins[i]} & set(flagged) for i in (0, 1))  # a copy of each contradiction
        review = next(v for v in tabs(ls, project).values() if is_review_tab(v))
        assert review["data"]["title"] == f"{REVIEW_TAB} ({len(flagged)})"
        assert tab_tasks(ls, project, review) == flagged  # Label Studio's own filter shows exactly them
        if shutil.which("chromium") and shutil.which(
            "chromedriver"
        ):  # and an annotator sees it in Label Studio's Data Manager
            browser = request.getfixturevalue("browser")
            shot = Path(os.environ.get("REVIEW_TAB_SCREENSHOT", tmp_path / "review-tab.png"))
            text = show_in_browser(browser, ls, project, review, shot)
            assert QUEUE_TAB in text and shot.stat().st_size > 10_000

        # a person opens a flagged task and saves its label again: confirmed, it leaves the review
        confirmed = flagged[0]
        (annotation,) = ls.api("GET", f"/api/tasks/{confirmed}/annotations")
        ls.api("PATCH", f"/api/annotations/{annotation['id']}", json={"result": annotation["result"]})
        left = [t for t in flagged if t != confirmed]
        wait_for(
            lambda: sorted(int(r["task"]) for r in status(backend, project)["review"]) == left,
            60,
            "the confirmed task to leave the review",
        )
        views = tabs(ls, project)
        mine = [v for v in views.values() if is_review_tab(v)]
        assert [v["data"]["title"] for v in mine] == [f"{REVIEW_TAB} ({len(left)})"]  # it stays, even empty
        assert tab_tasks(ls, project, mine[0]) == left
        assert QUEUE_TAB in views and project_version(ls, project) == v1  # no round for a confirmation
