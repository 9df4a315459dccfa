"""Reading a project from a real Label Studio 1.23.2 in proportion to what changed: the task
listing kept between rounds (``TaskIndex``) lists only the tasks created since, and every task
again when some were deleted; annotated tasks always come in full."""

import sqlite3

import pytest

from ml_backend.demo.servers import ADMIN_TOKEN
from ml_backend.service.ls_client import LIGHT, LabelStudioConnection, ProjectAPI, TaskIndex
from tests.helpers import LABELS, annotate

pytestmark = pytest.mark.labelstudio


def test_the_listing_reads_only_new_tasks_until_tasks_are_deleted(label_studio):
    ls = label_studio
    project = ls.create_project("listing", LABELS)
    first = ls.import_tasks(project, [{"image": f"http://127.0.0.1:9/{i}.png"} for i in range(30)])
    api, index = ProjectAPI(LabelStudioConnection(ls.url, ADMIN_TOKEN), project), TaskIndex()
    pages = []
    original = api._pages
    api._pages = lambda params: (pages.append(params), original(params))[1]

    tasks = api.tasks(index)
    assert sorted(t["id"] for t in tasks) == sorted(first) and (index.full, index.incremental) == (1, 0)
    # Label Studio honours the light listing's sparse fields: each task's id and data, nothing computed
    assert pages[0] == LIGHT and all(set(t) == {"id", "data"} for t in original(LIGHT))
    assert all(t["annotations"] == [] and t["data"]["image"].endswith(".png") for t in tasks)
    assert set(index.parts) == {"count", "every", "annotated"}  # each read timed (a slow round says which)

    ls.api(
        "POST",
        f"/api/tasks/{first[3]}/annotations",
        json={
            "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": [LABELS[1]]}}]
        },
    )
    added = ls.import_tasks(project, [{"image": f"http://127.0.0.1:9/new{i}.png"} for i in range(5)])
    pages.clear()
    tasks = api.tasks(index)
    assert sorted(t["id"] for t in tasks) == sorted(first + added) and (index.full, index.incremental) == (1, 1)
    listed_new = [p for p in pages if p["fields"] == "task_only"]
    assert len(listed_new) == 1 and '"value": %d' % max(first) in listed_new[0]["query"]
    (annotated,) = [t for t in tasks if t["annotations"]]
    assert annotated["id"] == first[3] and annotated["annotations"][0]["result"][0]["value"]["choices"] == [LABELS[1]]
    # the annotated tasks in full: what the backend reads alone (no predictions, no computed columns)
    (read,) = api._annotated()
    assert set(read) == {"id", "data", "annotations", "updated_at"}
    assert set(read["annotations"][0]) == {"id", "result", "was_cancelled", "updated_at"}
    with pytest.raises(RuntimeError, match="without its result"):  # an include that drops it: said, not no label
        list(api._annotated(fields={"fields": "all", "include": "id,data,annotations"}))
    by_id = {t["id"]: t for t in tasks}
    assert by_id[added[0]]["data"]["image"].endswith("new0.png")
    assert set(index.parts) == {"count", "new", "annotated"} and all(s >= 0 for s in index.parts.values())

    assert sorted(t["id"] for t in api.tasks(index)) == sorted(first + added)  # nothing new: nothing listed twice
    assert (index.full, index.incremental) == (1, 2)

    ls.api("DELETE", f"/api/tasks/{first[0]}/")
    more = ls.import_tasks(project, [{"image": "http://127.0.0.1:9/late.png"}])  # same count as before the delete
    tasks = api.tasks(index)
    assert sorted(t["id"] for t in tasks) == sorted(first[1:] + added + more) and index.full == 2


def test_a_sample_of_unlabeled_tasks_is_spread_over_the_project_and_the_same_each_time(label_studio):
    """A big project's first queue (FIRST_QUEUE_SAMPLE) reads a few pages of the unlabeled listing at
    evenly spaced page numbers: tasks imported in order (class by class) still give a mixed sample."""
    ls = label_studio
    project = ls.create_project("sample", LABELS)
    ids = ls.import_tasks(project, [{"image": f"http://127.0.0.1:9/{i}.png"} for i in range(250)])
    for task in ids[:10]:
        annotate(ls, task, LABELS[0])
    api = ProjectAPI(LabelStudioConnection(ls.url, ADMIN_TOKEN), project)
    sample, total = api.sample_unlabeled(60, page_size=20)
    assert total == 240 and len(sample) == 60 and len({t["id"] for t in sample}) == 60
    assert not {t["id"] for t in sample} & set(ids[:10])  # annotated tasks are not in it
    assert all(t["annotations"] == [] and t["data"]["image"].endswith(".png") for t in sample)
    picked = sorted(ids.index(t["id"]) for t in sample)
    assert picked[0] < 40 and picked[-1] > 180  # from the start to the end of the project, not its first pages
    quarters = [sum(q * 60 <= i < (q + 1) * 60 for i in picked) for q in range(4)]
    assert min(quarters) >= 10, quarters
    again, _ = api.sample_unlabeled(60, page_size=20)
    assert [t["id"] for t in again] == [t["id"] for t in sample]
    small, total = api.sample_unlabeled(1000, page_size=100)  # more than there is: every unlabeled task
    assert total == 240 and sorted(t["id"] for t in small) == sorted(ids[10:])


def test_an_annotation_on_a_task_with_a_stale_counter_is_still_read(label_studio, monkeypatch):
    """Label Studio's per-task annotation counter can be left at 0 by a recount made beside
    concurrent writes (what the lost update leaves behind is set here in its database). The annotated
    tasks are found by their annotations, not by that counter: once each, however many annotations
    they have. Found by the soak: the earlier check of the listing against Label Studio's count of the
    project's annotations could not see the stale counter when an annotation made while the tasks
    were read evened the count; the filter on the counter then missed the task (this test fails
    with it)."""
    from ml_backend.service import sdk

    ls = label_studio
    project = ls.create_project("stale counter", LABELS)
    ids = ls.import_tasks(project, [{"image": f"http://127.0.0.1:9/{i}.png"} for i in range(12)])
    for task in (ids[0], ids[0], ids[1], ids[2]):  # two annotations on the first task
        annotate(ls, task, LABELS[2])
    with sqlite3.connect(ls.data_dir / "label_studio.sqlite3") as db:
        db.execute("UPDATE task SET total_annotations = 0 WHERE id = ?", (ids[1],))
    api = ProjectAPI(LabelStudioConnection(ls.url, ADMIN_TOKEN), project)
    assert [t["id"] for t in api._annotated()] == ids[:3]

    api.annotated_page_size = 1  # a page per task: an annotator labels ids[5] after the first page
    real, made = sdk.request, []

    def request(client, path, method, **kwargs):
        response = real(client, path, method, **kwargs)
        if (kwargs.get("params") or {}).get("fields") == "all" and not made:
            made.append(annotate(ls, ids[5], LABELS[0]))
        return response

    monkeypatch.setattr(sdk, "request", request)
    tasks = {t["id"]: t for t in api.tasks(TaskIndex())}
    assert made and sorted(i for i, t in tasks.items() if t["annotations"]) == [*ids[:3], ids[5]]
    assert tasks[ids[1]]["annotations"][0]["result"][0]["value"]["choices"] == [LABELS[2]]
    assert len(tasks[ids[0]]["annotations"]) == 2 and len(tasks) == 12
