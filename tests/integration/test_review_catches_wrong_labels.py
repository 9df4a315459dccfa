"""The review list against a real Label Studio 1.23.2 with the demo's photos and network: 6 of 60 labels
(10 %) are wrong, and at least half of them are in the review's top 10 after the round, each with the
held-out model's guess, and in the project's "Review (N)" tab."""

import pytest

from ml_backend.demo.sample_data import fashion_available, fashion_pngs
from ml_backend.demo.servers import BackendProcess, wait_for
from ml_backend.fashion_mnist import FASHION_CLASSES
from ml_backend.service.tabs import is_review_tab
from tests.helpers import FAST, annotate, connect_and_wait_for_version_0, project_version, status

pytestmark = pytest.mark.labelstudio


@pytest.mark.skipif(not fashion_available(), reason="Debian's dataset-fashion-mnist is not installed")
def test_the_review_finds_most_wrong_labels_in_its_top_10(label_studio, tmp_path):
    ls = label_studio
    env = {"LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.personal_access_token(), **FAST, "REVIEW_TOP": "10"}
    env.update(BACKBONE="efficientnet_lite0", WEIGHTS="DEFAULT", IMAGE_SIZE="64", FREEZE="blocks.5")  # the demo's
    photos = fashion_pngs(70, size=112, seed=5)  # 60 labeled, 10 left in the queue
    labels = list(FASHION_CLASSES)
    with BackendProcess(tmp_path, env) as backend:
        project = ls.create_project("review", labels)
        ids = ls.upload_files(project, [(name, data) for name, data, _ in photos])
        connect_and_wait_for_version_0(ls, backend, project)
        wrong = set(ids[:60:10])  # every tenth label is another class
        truth = {t: p[2] for t, p in zip(ids, photos)}
        for t in ids[:60]:
            annotate(ls, t, labels[(labels.index(truth[t]) + 3) % 10] if t in wrong else truth[t])
        v1 = wait_for(lambda: "-t1-" in (v := project_version(ls, project)) and v, 300, "round 1")
        st = wait_for(lambda: (s := status(backend, project))["published_version"] == v1 and s, 120, "the publish")
        flagged = [int(r["task"]) for r in st["review"]]
        assert len(flagged) <= 10 and len(wrong & set(flagged)) >= 3, (sorted(wrong), st["review"])
        for r in st["review"]:  # each says why: the held-out guess and its probability
            assert r["method"] == "heldout" and r["guess"] in labels and 0 <= r["p_label"] < 0.5
            assert r["p_guess"] >= r["p_label"]
        (tab,) = [v for v in ls.api("GET", "/api/dm/views/", params={"project": project}) if is_review_tab(v)]
        assert tab["data"]["title"] == f"Review ({len(flagged)})"
        # ... and inside Label Studio, each flagged task carries the model's guess beside the annotation
        assert "tasks:annotations_results" not in tab["data"]["hiddenColumns"]["explore"]
        assert "tasks:predictions_results" not in tab["data"]["hiddenColumns"]["explore"]
        reasons = {}
        for r in st["review"]:
            task = ls.api("GET", f"/api/tasks/{r['task']}/")
            mine = [p for p in task["predictions"] if str(p["model_version"]).endswith("-review")]
            assert len(mine) == 1, task["predictions"]
            reasons[int(r["task"])] = (mine[0]["result"][0]["value"]["choices"], mine[0]["score"])
        assert reasons == {int(r["task"]): ([r["guess"]], pytest.approx(r["p_label"])) for r in st["review"]}
