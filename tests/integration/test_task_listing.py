"""Reading a project from a real Label Studio 1.23.2 in proportion to what changed: the task
listing kept between rounds (``TaskIndex``) lists only the tasks created since, and every task
again when some were deleted; annotated tasks always come in full."""

import pytest

from ml_backend.demo.servers import ADMIN_TOKEN
from ml_backend.service.ls_client import LabelStudioConnection, ProjectAPI, TaskIndex
from tests.helpers import LABELS

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
    assert all(t["annotations"] == [] and t["data"]["image"].endswith(".png") for t in tasks)

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
    by_id = {t["id"]: t for t in tasks}
    assert by_id[added[0]]["data"]["image"].endswith("new0.png")

    assert sorted(t["id"] for t in api.tasks(index)) == sorted(first + added)  # nothing new: nothing listed twice
    assert (index.full, index.incremental) == (1, 2)

    ls.api("DELETE", f"/api/tasks/{first[0]}/")
    more = ls.import_tasks(project, [{"image": "http://127.0.0.1:9/late.png"}])  # same count as before the delete
    tasks = api.tasks(index)
    assert sorted(t["id"] for t in tasks) == sorted(first[1:] + added + more) and index.full == 2
