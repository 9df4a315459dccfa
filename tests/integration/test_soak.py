"""A short soak (``benchmarks/soak.py``): four annotators label through a real Label Studio 1.23.2
for three minutes while faults arrive (kill -9 of a worker, Label Studio down, MODEL_DIR's
filesystem full, kill -9 of the whole backend, and the next ones of the list while time is left), and
the invariants hold throughout: no label lost, no 5xx but the documented 503, every fault recovered,
no partial checkpoint, and no process left behind."""

import json
import os
import subprocess

import pytest

from benchmarks.soak import parse_args, run

pytestmark = pytest.mark.labelstudio

FAULTS = "worker_kill,ls_outage,disk_full,backend_kill,webhook_burst,image_500,replica"


def children() -> list[str]:
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(os.getpid())], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if " ps " not in f" {line} "]


def test_a_short_soak_with_faults_loses_no_label_and_recovers_from_every_fault(tmp_path):
    args = parse_args(
        [
            *("--minutes", "3", "--tasks", "300", "--backbone", "smallcnn", "--annotators", "4"),
            *("--fault-s", "8", "--warmup-s", "10", "--faults", FAULTS, "--out", str(tmp_path / "soak.json")),
            *("--env", "TRAIN_DEBOUNCE_MAX_S=10"),  # a round every ~10 s of labeling: more faults in 3 minutes
        ]
    )
    before = children()
    result = run(args)
    args.out.write_text(json.dumps(result, indent=1, default=str))  # kept with the test's tmp_path

    assert result["annotations"]["annotations"] >= 20 and result["versions_published"] >= 3
    assert result["annotations_lost"] == 0, result["final_check"]  # every label in the version the run ends on
    # (result["lost_during_run"]: labels a version missed though they were saved before its round read
    # them, each in a later version; an open defect, docs/benchmarks.md#soak-annotators-label-for-20-minutes-
    # while-things-break-benchmarkssoakpy)
    assert result["unexpected_5xx"] == 0, result["unexpected_5xx_detail"]
    assert result["health"]["unanswered_outside_backend_restarts"] == 0
    assert result["partial_checkpoints"] == [] and result["model_version_without_predictions"] == []
    assert len(result["faults"]) >= 4
    for fault in result["faults"]:
        assert "error" not in fault, fault
        if "skipped" not in fault:  # (disk_full is skipped, and says so, where mounting is not allowed)
            assert fault["recovery_s"] is not None and fault["recovery_s"] <= 60, fault
    assert children() == before  # every process the soak started is stopped


def test_a_label_deleted_while_the_labels_are_listed_hides_no_other_label(label_studio, monkeypatch):
    """Found by the soak: the annotated tasks were listed by page number, so an annotation deleted on
    the first page while it was read moved the next page's first task onto it, and that round
    trained without that task's label. The listing now pages by task id."""
    from ml_backend.demo.servers import ADMIN_TOKEN
    from ml_backend.service import sdk
    from ml_backend.service.ls_client import LabelStudioConnection, ProjectAPI
    from tests.helpers import LABELS, annotate

    ls = label_studio
    project = ls.create_project("listing while labels change", LABELS)
    ids = ls.import_tasks(project, [{"image": f"http://127.0.0.1:9/{i}.png"} for i in range(10)])
    annotation = {t: annotate(ls, t, LABELS[1])["id"] for t in ids[:8]}
    api = ProjectAPI(LabelStudioConnection(ls.url, ADMIN_TOKEN), project)
    api.annotated_page_size = 4
    real, pages = sdk.request, []

    def request(client, path, method, **kwargs):
        response = real(client, path, method, **kwargs)
        if (kwargs.get("params") or {}).get("fields") == "all":
            pages.append(response)
            if len(pages) == 1:  # an annotator deletes their label on the first page just after it was read
                ls.api("DELETE", f"/api/annotations/{annotation[ids[0]]}")
        return response

    monkeypatch.setattr(sdk, "request", request)
    labeled = sorted(t["id"] for t in api.tasks() if t["annotations"])
    assert len(pages) >= 2
    assert set(ids[1:8]) <= set(labeled)  # every task still labeled is listed with its label (ids[0]: read before)
