"""The labeling screen as an annotator sees it, in a real browser (Debian's chromium through selenium)
against a real Label Studio with the demo's label config: every choice visible without scrolling in a
1280x800 window, and the model's guess already selected when PRELABEL=on (none with PRELABEL=off,
which must not cost the project its model version, the queue's order)."""

import os
from pathlib import Path

import pytest

from ml_backend.demo.sample_data import fashion_available, fashion_pngs
from ml_backend.demo.servers import BackendProcess
from ml_backend.fashion_mnist import FASHION_CLASSES
from tests.helpers import FAST, LABELS, connect_and_wait_for_version_0, log_in

pytestmark = pytest.mark.labelstudio

CHOICES_JS = """return [...document.querySelectorAll('input[type=radio]')].map(e => {
  const box = e.closest('label') || e.parentElement; const r = box.getBoundingClientRect();
  return {label: box.innerText.replace(/\\s*\\[.\\]$/, '').trim(), checked: e.checked,
          top: r.top, bottom: r.bottom, inner: window.innerHeight};
});"""

TASK_JS = """const e = document.querySelector('.lsf-current-task__task-id');
return e && e.firstChild ? e.firstChild.textContent.trim() : null;"""  # the task id Label Studio shows under the task


def demo_like_project(ls, digits, title):
    """The demo's project: Fashion-MNIST photos when installed, else the digits; its side-by-side config."""
    if fashion_available():
        labels, files = list(FASHION_CLASSES), [(n, d) for n, d, _ in fashion_pngs(20, size=112, seed=3)]
    else:
        labels, files = LABELS, [(n, d) for n, d, _ in digits[:20]]
    project = ls.create_project(title, labels, image_px=224)
    ls.upload_files(project, files)
    return project, labels


def open_next_task(browser, ls, project):
    """Label Studio's label stream ("Label All Tasks"): the choices once the task shows, and its id."""
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(f"{ls.url}/projects/{project}/data?labeling=1")
    WebDriverWait(browser, 60).until(lambda d: len(d.execute_script(CHOICES_JS)) >= 10 and d.execute_script(TASK_JS))
    WebDriverWait(browser, 15).until(lambda d: d.execute_script("return document.querySelector('img')"))
    return browser.execute_script(CHOICES_JS), int(browser.execute_script(TASK_JS))


def guess_of(ls, project, task) -> str:
    version = ls.api("GET", f"/api/projects/{project}")["model_version"]
    (prediction,) = [p for p in ls.api("GET", f"/api/tasks/{task}")["predictions"] if p["model_version"] == version]
    return prediction["result"][0]["value"]["choices"][0]


def test_the_labeling_screen_shows_every_choice_and_the_models_guess(label_studio, digits64, tmp_path, browser):
    ls = label_studio
    log_in(browser, ls)
    browser.set_window_size(1280, 800)
    for prelabel in ("off", "on"):
        env = {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.personal_access_token(), **FAST}
        with BackendProcess(tmp_path / prelabel, {**env, "PRELABEL": prelabel}) as backend:
            project, labels = demo_like_project(ls, digits64, f"labeling screen, prelabel {prelabel}")
            v0 = connect_and_wait_for_version_0(ls, backend, project)
            info = ls.api("GET", f"/api/projects/{project}")
            assert info["show_collab_predictions"] is (prelabel == "on")
            assert info["model_version"] == v0  # turning pre-labeling off kept the queue's version
            choices, task = open_next_task(browser, ls, project)
            assert [c["label"] for c in choices] == labels
            assert all(0 <= c["top"] and c["bottom"] <= c["inner"] for c in choices), choices  # no scrolling
            checked = [c["label"] for c in choices if c["checked"]]
            if prelabel == "off":
                assert checked == []
            else:
                assert checked == [guess_of(ls, project, task)]  # the model's guess, already selected
                shot = Path(os.environ.get("LABELING_SCREENSHOT", tmp_path / "labeling-screen.png"))
                browser.save_screenshot(str(shot))
                assert shot.stat().st_size > 20_000
