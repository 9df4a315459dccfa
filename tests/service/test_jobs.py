"""A training round and a publish as plain functions, on an in-memory stand-in for Label Studio's
project API (the real one is exercised end to end in tests/integration)."""

import base64

import pytest
import torch

from ml_backend.demo.servers import classification_config
from ml_backend.service import jobs
from ml_backend.service.backend import Backend
from ml_backend.service.label_config import parse_label_config
from ml_backend.service.settings import Settings
from ml_backend.service.status import WorkerStatus

CONFIG = classification_config([str(i) for i in range(10)])


class ProjectAPIStandIn:
    def __init__(self, tasks):
        self.tasks_list, self.imported, self.model_version = tasks, [], None
        self.calls: list[tuple] = []  # what was done, in order
        self.view_list: list[dict] = []

    def tasks(self, index=None):
        return self.tasks_list

    def sample_unlabeled(self, n, page_size=100):  # every k-th unlabeled task (Label Studio reads pages)
        pool = [t for t in self.tasks_list if not t["annotations"]]
        step = max(1, len(pool) // n)
        self.samples = getattr(self, "samples", 0) + 1
        return [{"id": t["id"], "data": t["data"], "annotations": []} for t in pool[::step][:n]], len(pool)

    def delete_version(self, version):
        if version.endswith("-review"):
            self.review = []
            return
        self.calls.append(("delete", version))
        self.imported = [p for p in self.imported if p["model_version"] != version]

    def import_predictions(self, predictions):
        if all(p["model_version"].endswith("-review") for p in predictions):  # the review tab's reasons
            self.review = predictions
            return
        self.calls.append(("import", [p["task"] for p in predictions]))
        self.imported += predictions

    def set_model_version(self, version, uncertainty, prelabel=None):
        self.calls.append(("switch", version))
        self.prelabel = prelabel
        self.model_version = version

    def model_versions(self):
        versions = [p["model_version"] for p in self.imported + getattr(self, "review", [])]
        return {v: versions.count(v) for v in sorted(set(versions))}

    def delete_task_predictions(self, task_ids):
        self.calls.append(("delete_tasks", list(task_ids)))
        gone = [p for p in self.imported if p["task"] in task_ids]
        self.imported = [p for p in self.imported if p["task"] not in task_ids]
        return len(gone)

    def views(self):
        return list(self.view_list)

    def create_view(self, data):
        self.view_list.append({"id": len(self.view_list) + 1, "data": data})

    def update_view(self, view_id, data):
        next(v for v in self.view_list if v["id"] == view_id)["data"] = data

    def delete_view(self, view_id):
        self.view_list = [v for v in self.view_list if v["id"] != view_id]


class Control:
    """The worker's side of a job (JobControl): never stopped; a round is due when ``round_due()`` says so."""

    def __init__(self, round_due):
        self.round_due = round_due

    def stopped(self):
        return False


def context(tmp_path, digits64, labeled, **env):
    settings = Settings.from_env(
        {
            "BACKBONE": "smallcnn",
            "WEIGHTS": "none",
            "MODEL_DIR": str(tmp_path),
            "DEVICE": "cpu",
            "TRAIN_STEPS": "5",
            "TRAIN_MIN_NEW_LABELS": "3",
            **env,
        }
    )
    backend = Backend(settings)
    state, _ = backend.projects.register("1", parse_label_config(CONFIG))
    tasks = []
    for i in range(20):
        annotations = (
            [
                {
                    "result": [
                        {
                            "from_name": "label",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": [str(digits64[i][2])]},
                        }
                    ],
                    "was_cancelled": False,
                }
            ]
            if i < labeled
            else []
        )
        tasks.append(
            {
                "id": i + 1,
                "annotations": annotations,
                "data": {"image": "data:image/png;base64," + base64.b64encode(digits64[i][1]).decode()},
            }
        )
    api = ProjectAPIStandIn(tasks)
    ctx = jobs.JobContext(
        state,
        backend.projects,
        backend.scorer,
        backend.features,
        backend.settings,  # as the learner's: BATCH_SIZE resolved for the device
        lambda project: api,
        WorkerStatus(),
        lambda: "secret",
        backend.instance_id,
    )
    return backend, ctx, api


def test_a_round_needs_enough_changed_labels_unless_forced(tmp_path, digits64):
    backend, ctx, api = context(tmp_path, digits64, labeled=2)
    try:
        jobs.run_round(ctx, force=False)
        assert ctx.state.round == 0 and "2 changed label(s), TRAIN_MIN_NEW_LABELS=3" in ctx.status.info["reason"]
        assert api.imported == []
        before = backend.metrics()["worker"]["rounds_trained"]  # this process's rounds (other tests' too)
        jobs.run_round(ctx, force=True)  # "Start Training" always trains
        assert ctx.state.round == 1 and ctx.status.info["training_runs"] == 1
        assert backend.metrics()["worker"]["rounds_trained"] == before + 1
        assert api.model_version == ctx.state.version == ctx.state.published_version
        assert sorted(p["task"] for p in api.imported) == list(range(3, 21))  # the unlabeled pool
        jobs.run_round(ctx, force=False)  # nothing changed since: no round
        assert ctx.state.round == 1
    finally:
        backend.close()


def test_data_dropout_looks_at_the_head_trained_on_the_new_labels(tmp_path, digits64, monkeypatch):
    from ml_backend.core import review

    backend, ctx, api = context(tmp_path, digits64, labeled=12, TRAIN_DROP_HARMFUL="true", TRAIN_MIN_NEW_LABELS="1")
    seen = []
    real = review.drop_harmful

    def spy(model, examples, *args, **kwargs):
        seen.append(model.head.weight.detach().clone())
        kept, dropped = real(model, examples, *args, **kwargs)
        return kept[2:], dropped + [{"task": e.key, "label": "x", "psi": 1.0} for e in kept[:2]]  # drop two more

    monkeypatch.setattr(review, "drop_harmful", spy)
    try:
        served = backend.projects.model(ctx.state).head.weight.detach().clone()
        jobs.run_round(ctx, force=False)
        assert len(seen) == 1 and not torch.equal(seen[0], served)  # ψ on the trained head, not the served one
        assert ctx.state.round == 1 and len(ctx.state.labels_used) <= 10  # trained again without the dropped
        assert len(ctx.status.info["dropped_by_influence"]) >= 2
    finally:
        backend.close()


def test_after_a_restart_a_pool_relative_strategy_rescores_before_valuing_requests(tmp_path, digits64):
    backend, ctx, api = context(tmp_path, digits64, labeled=0, STRATEGY="emoc:references=8")
    backend.projects.persist = True  # (a configured connection persists registrations)
    jobs.publish(ctx)
    published = {p["task"]: p["score"] for p in api.imported}
    backend.close()

    settings = ctx.settings
    again = Backend(settings)  # a restart: the served version is published, EMOC's reference is gone
    state = again.projects["1"]
    assert state.published_version == state.version
    task = api.tasks_list[4]
    before = again.predict("1", [task])[0]
    assert before["acquisition"] is None and before["score"] == 0.5
    ctx2 = jobs.JobContext(
        state,
        again.projects,
        again.scorer,
        again.features,
        again.settings,
        lambda project: api,
        WorkerStatus(),
        lambda: "secret",
        again.instance_id,
    )
    jobs.rescore(ctx2)  # what the worker runs when a request was given a neutral rank
    after = again.predict("1", [task])[0]
    assert after["acquisition"] is not None and after["score"] == pytest.approx(published[task["id"]])
    imported = len(api.imported)
    jobs.rescore(ctx2)  # nothing to do: the pool of this version is scored
    assert len(api.imported) == imported
    again.close()


def test_the_top_of_the_new_queue_is_imported_before_the_switch_and_the_rest_after(tmp_path, digits64):
    """PUBLISH_FIRST: the tasks Label Studio will serve first get the new version's predictions, the
    project switches, then the rest follows, each chunk's older predictions deleted just before it;
    what is left of older versions (on the top tasks) is deleted by version last."""
    backend, ctx, api = context(tmp_path, digits64, labeled=4, PUBLISH_FIRST="5", PUBLISH_CHUNK="4")
    try:
        jobs.run_round(ctx, force=True)
        v1 = ctx.state.version
        kinds = [c[0] for c in api.calls]
        # 5 = 4 + 1 before the switch; 11 = 4 + 4 + 3 after it, each chunk cleared first
        assert kinds == ["import", "import", "switch"] + ["delete_tasks", "import"] * 3
        first = [t for c in api.calls[0:2] for t in c[1]]
        score = {p["task"]: p["score"] for p in api.imported}
        assert len(first) == 5 and sorted(score[t] for t in first) == sorted(score.values())[:5]
        assert [c[1] for c in api.calls[3::2]] == [c[1] for c in api.calls[4::2]]  # each chunk: its own tasks
        assert sorted(score) == list(range(5, 21)) and api.model_version == v1 == ctx.state.published_version
        assert ctx.state.queue_version == v1 and ctx.status.info["last_round"]["publish"]["import_rest_seconds"] >= 0
        # the next round: the new version is served before the old one's predictions are deleted
        for t in api.tasks_list[4:8]:
            t["annotations"] = api.tasks_list[0]["annotations"]
        api.calls.clear()
        jobs.run_round(ctx, force=True)
        kinds = [c[0] for c in api.calls]
        assert kinds.index("switch") < kinds.index("delete_tasks") and api.calls[-1] == ("delete", v1)
        assert {p["model_version"] for p in api.imported} == {ctx.state.version}
        assert len(api.imported) == 12  # one prediction per unlabeled task
        # publishing the same version again clears each chunk's tasks first (never one request for a whole
        # version): never two predictions of one version on a task
        api.calls.clear()
        jobs.publish(ctx)
        assert api.calls[0][0] == "delete_tasks" and ("delete", ctx.state.version) not in api.calls
        assert len(api.imported) == 12 and len({p["task"] for p in api.imported}) == 12
    finally:
        backend.close()


def test_predictions_of_other_sources_are_never_deleted_chunk_by_chunk(tmp_path, digits64):
    """Another model's (or a person's imported) predictions in the project: the rest is imported
    without clearing tasks, and only this backend's older versions are deleted, by version."""
    backend, ctx, api = context(tmp_path, digits64, labeled=4, PUBLISH_FIRST="5", PUBLISH_CHUNK="4")
    try:
        api.imported = [{"task": t, "result": [], "score": 0.1, "model_version": "their-model"} for t in range(5, 21)]
        jobs.run_round(ctx, force=True)
        assert "delete_tasks" not in [c[0] for c in api.calls]
        assert sum(p["model_version"] == "their-model" for p in api.imported) == 16
        api.calls.clear()
        jobs.publish(ctx)  # the same version again, with their predictions there: cleared by version
        assert api.calls[0] == ("delete", ctx.state.version) and "delete_tasks" not in [c[0] for c in api.calls]
        assert sum(p["model_version"] == "their-model" for p in api.imported) == 16
    finally:
        backend.close()


def test_the_background_import_gives_way_to_a_round_and_the_next_complete_publish_prunes(tmp_path, digits64):
    """A round that is due stops the rest of a publish between chunks: the project already follows
    the new version, nothing older is pruned by version yet (tasks not reached keep their older
    prediction in the Data Manager), and the next publish that completes deletes every older version."""
    backend, ctx, api = context(tmp_path, digits64, labeled=4, PUBLISH_FIRST="5", PUBLISH_CHUNK="4")
    try:
        jobs.run_round(ctx, force=True)
        v1 = ctx.state.version
        for t in api.tasks_list[4:8]:
            t["annotations"] = api.tasks_list[0]["annotations"]
        api.calls.clear()
        due, seen = iter([False, True]), []  # one chunk of the rest, then a round is due

        def round_due():  # what /status shows meanwhile, after a look at MODEL_DIR as every process makes
            ctx.projects.refresh(ctx.state, every_s=0)
            seen.append((ctx.state.queue_version, ctx.state.published_version))
            return next(due)

        ctx.control = Control(round_due)
        jobs.run_round(ctx, force=True)
        v2 = ctx.state.version
        assert seen[0] == (v2, None)  # the queue follows v2 while its rest is still on its way
        kinds = [c[0] for c in api.calls]
        assert kinds == ["import", "import", "switch", "delete_tasks", "import"]  # top 5, switch, one chunk
        assert api.model_version == v2 == ctx.state.published_version and ("delete", v1) not in api.calls
        assert {p["model_version"] for p in api.imported} == {v1, v2}
        progress = ctx.status.info["publish_progress"]
        assert progress["interrupted"] and progress["imported"] == 9 and progress["total"] == 12
        ctx.control = Control(lambda: False)
        for t in api.tasks_list[8:11]:
            t["annotations"] = api.tasks_list[0]["annotations"]
        api.calls.clear()
        jobs.run_round(ctx, force=True)
        assert {c for c in api.calls if c[0] == "delete"} >= {("delete", v1), ("delete", v2)}
        assert {p["model_version"] for p in api.imported} == {ctx.state.version}
        assert len(api.imported) == 9  # every unlabeled task: 20 - 11 labeled
    finally:
        backend.close()


def test_a_big_project_is_served_from_a_sample_first_then_from_its_whole_pool(tmp_path, digits64):
    """FIRST_QUEUE_SAMPLE: a project never published, with more than twice the sample unlabeled, gets
    a preliminary version scored on the sample alone (ranked among itself) and is switched to it
    before the whole pool is scored; the full version then replaces it and prunes it."""
    backend, ctx, api = context(tmp_path, digits64, labeled=0, FIRST_QUEUE_SAMPLE="5", PUBLISH_FIRST="0")
    try:
        version = ctx.state.version
        jobs.publish(ctx)
        first = f"{version}-first"
        assert api.calls[0][0] == "import" and api.calls[1] == ("switch", first)
        sampled = api.calls[0][1]
        assert len(sampled) == 5 and [c[0] for c in api.calls[2:4]] == ["import", "switch"]
        assert sorted(api.calls[2][1]) == list(range(1, 21)) and api.calls[3] == ("switch", version)
        assert api.calls[-1] == ("delete", first) and {p["model_version"] for p in api.imported} == {version}
        progress = ctx.status.info["publish_progress"]
        assert progress["first_queue"]["version"] == first and progress["first_queue"]["unlabeled"] == 20
        assert ctx.state.published_version == version
        # the sample was ranked among itself: its scores are the ranks 0, 1/5, ..., whatever the pool
        # (the stand-in keeps no deleted predictions, so look at what was imported for the sample)
        api.calls.clear()
        jobs.publish(ctx)  # published already: no sample again
        assert ("switch", first) not in api.calls and api.samples == 1
        for task in api.tasks_list[:3]:  # labels arrive: a round's publish is no first queue either
            choice = {"choices": [str(digits64[task["id"] - 1][2])]}
            result = [{"from_name": "label", "to_name": "image", "type": "choices", "value": choice}]
            task["annotations"] = [{"result": result, "was_cancelled": False}]
        api.calls.clear()
        jobs.run_round(ctx, force=True)
        assert ctx.state.round == 1 and api.samples == 1
        assert [c for c in api.calls if c[0] == "switch"] == [("switch", ctx.state.version)]
    finally:
        backend.close()


def test_the_sample_is_ranked_among_itself_and_leaves_the_pool_state_alone(tmp_path, digits64):
    backend, ctx, api = context(tmp_path, digits64, labeled=0, FIRST_QUEUE_SAMPLE="5")
    try:
        state, model = ctx.state, ctx.projects.model(ctx.state)
        sample = api.sample_unlabeled(5)[0]
        results = ctx.scorer.score(state, sample, model, "v-first", sample=True)
        assert sorted(r["score"] for r in results) == [0.0, 0.2, 0.4, 0.6, 0.8]
        assert all(r["model_version"] == "v-first" for r in results)
        assert state.pool.scored_version is None and state.pool.acquisitions == {}
    finally:
        backend.close()


def test_a_small_project_is_scored_whole_at_once(tmp_path, digits64):
    backend, ctx, api = context(tmp_path, digits64, labeled=0, FIRST_QUEUE_SAMPLE="10")
    try:
        jobs.publish(ctx)  # 20 unlabeled tasks: not more than twice the sample
        assert api.samples == 1 and not any(c == ("switch", f"{ctx.state.version}-first") for c in api.calls)
        assert api.model_version == ctx.state.version
    finally:
        backend.close()


def test_the_full_scoring_after_a_first_queue_gives_way_to_a_due_round(tmp_path, digits64):
    """The whole pool's scoring stops between chunks when a round is due: the preliminary version
    keeps serving, nothing is marked published, and the round's publish serves its own sample first."""
    backend, ctx, api = context(tmp_path, digits64, labeled=0, FIRST_QUEUE_SAMPLE="5", BATCH_SIZE="8")
    try:
        many = [dict(api.tasks_list[i % 20], id=i + 1) for i in range(600)]  # > 2 chunks of 256
        api.tasks_list = many
        ctx.control = Control(lambda: True)
        version = ctx.state.version
        assert jobs.publish(ctx) is None
        assert api.model_version == f"{version}-first" and ctx.state.published_version is None
        assert ctx.status.publish_progress["scored"] == 256  # one chunk, then it gave way
        assert {p["model_version"] for p in api.imported} == {f"{version}-first"}
        ctx.control = Control(lambda: False)
        jobs.publish(ctx)  # the cache has the first chunk; the rest is scored now
        assert api.model_version == version == ctx.state.published_version
        assert {p["model_version"] for p in api.imported} == {version} and len(api.imported) == 600
    finally:
        backend.close()


def _label(task, digits64):
    choice = {"choices": [str(digits64[(task["id"] - 1) % 20][2])]}
    task["annotations"] = [{"result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": choice}]}]
    task["annotations"][0]["was_cancelled"] = False


def test_after_a_round_a_big_pool_is_served_from_the_previous_best_and_a_keyed_sample_first(tmp_path, digits64):
    """ROUND_QUEUE_CANDIDATES: after a round, the new model first scores the previous version's most
    valuable unlabeled tasks and a fixed sample of the others, as the whole pool of `<version>-first`,
    and the project is switched to it before the whole pool is scored; the full version then replaces
    it. A re-publish of the version the queue follows does not; 0 turns it off."""
    env = {"FIRST_QUEUE_SAMPLE": "5", "ROUND_QUEUE_CANDIDATES": "10", "ROUND_QUEUE_AFTER_S": "0", "BATCH_SIZE": "8"}
    backend, ctx, api = context(tmp_path, digits64, labeled=0, **env)
    try:
        api.tasks_list = [dict(api.tasks_list[i % 20], id=i + 1, annotations=[]) for i in range(60)]
        jobs.publish(ctx)
        v0, previous = ctx.state.version, dict(ctx.state.pool.acquisitions)
        assert api.model_version == v0 and len(previous) == 60
        labeled = sorted(api.tasks_list, key=lambda t: previous[str(t["id"])])[:3]  # not among the best
        for task in labeled:
            _label(task, digits64)
        unlabeled = {str(t["id"]) for t in api.tasks_list if not t["annotations"]}
        best = sorted(unlabeled, key=lambda k: previous[k], reverse=True)[:10]
        api.calls.clear()
        jobs.run_round(ctx, force=True)
        v1 = ctx.state.version
        assert v1 != v0 and ctx.state.round == 1
        switches = [c for c in api.calls if c[0] == "switch"]  # the head-first queue (ROUND_HEAD_FIRST) first
        assert switches == [("switch", f"{v0}-head"), ("switch", f"{v1}-first"), ("switch", v1)]
        head_at, first_at = api.calls.index(switches[0]), api.calls.index(switches[1])
        for calls in (api.calls[:head_at], api.calls[head_at:first_at]):  # each preliminary version's imports
            served_first = [t for c in calls if c[0] == "import" for t in c[1]]
            assert len(served_first) == 15 and {str(t) for t in served_first} >= set(best)
            assert not {t["id"] for t in labeled} & set(served_first)
        head = ctx.status.last_round["head_queue"]
        assert head["version"] == f"{v0}-head" and head["sample"] == 15 and head["unlabeled"] == 57
        progress = ctx.status.info["publish_progress"]
        assert progress["first_queue"]["version"] == f"{v1}-first" and progress["first_queue"]["unlabeled"] == 57
        assert "round_queue_seconds" in progress["timings"] and ctx.state.published_version == v1
        assert ("delete", f"{v1}-first") in api.calls and ("delete", f"{v0}-head") in api.calls
        assert {p["model_version"] for p in api.imported} == {v1}
        assert len(ctx.state.pool.acquisitions) == 57  # the whole pool, valued by the new version

        api.calls.clear()
        jobs.publish(ctx)  # the queue follows v1 already: no preliminary version again
        assert [c for c in api.calls if c[0] == "switch"] == [("switch", v1)]
    finally:
        backend.close()


@pytest.mark.parametrize(
    "candidates, after_s",
    [("0", "0"), ("30", "0"), ("10", "3600")],  # off; 57 unlabeled, not more than 2 × (30 + 5); scored fast
)
def test_no_preliminary_round_queue_when_off_the_pool_small_or_its_scoring_fast(
    tmp_path, digits64, candidates, after_s
):
    env = {"FIRST_QUEUE_SAMPLE": "5", "ROUND_QUEUE_CANDIDATES": candidates, "ROUND_QUEUE_AFTER_S": after_s}
    backend, ctx, api = context(tmp_path, digits64, labeled=0, BATCH_SIZE="8", **env)
    try:
        api.tasks_list = [dict(api.tasks_list[i % 20], id=i + 1, annotations=[]) for i in range(60)]
        jobs.publish(ctx)
        for task in api.tasks_list[:3]:
            _label(task, digits64)
        api.calls.clear()
        jobs.run_round(ctx, force=True)
        assert ctx.state.pool.scoring_seconds is not None
        assert [c for c in api.calls if c[0] == "switch"] == [("switch", ctx.state.version)]
    finally:
        backend.close()


def test_a_publish_that_model_dir_cannot_record_is_not_a_failed_round_and_is_recorded_later(
    tmp_path, digits64, monkeypatch
):
    """Found by the soak: with MODEL_DIR full after the checkpoint was written, the round's publish
    reached Label Studio but the record of it could not be written, so the round failed and ran again
    when space returned. Now the version serves, the round counts as done, nothing trains again, and
    the record is written before the next job."""
    import errno

    from ml_backend import atomic
    from ml_backend.service.store import Store

    backend, ctx, api = context(tmp_path, digits64, labeled=5)
    full = {"on": False}
    switch, write_json, mark = api.set_model_version, atomic.write_json, Store.mark_published

    def switch_then_fill(*a, **k):  # the disk fills once Label Studio follows the new version
        switch(*a, **k)
        full["on"] = True

    def enospc(real):
        def write(*a, **k):
            if full["on"]:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(*a, **k)

        return write

    api.set_model_version = switch_then_fill
    monkeypatch.setattr(atomic, "write_json", enospc(write_json))
    monkeypatch.setattr(Store, "mark_published", enospc(mark))
    try:
        jobs.run_round(ctx, force=False)
        version = ctx.state.version
        assert ctx.state.round == 1 and api.model_version == version == ctx.state.published_version
        assert ctx.state.unwritten_mark == version and "MODEL_DIR is full" in ctx.status.info["reason"]
        assert ctx.status.info["failed_runs"] == 0
        on_disk = ctx.projects.store.list_versions("1")[-1]
        assert on_disk["version"] == version and on_disk.get("published_version") is None
        jobs.run_job(ctx, ("round", False))  # still full: nothing changed, nothing trains, still pending
        assert ctx.state.round == 1 and ctx.state.unwritten_mark == version
        full["on"] = False  # space is back: the next job writes the record first
        jobs.run_job(ctx, ("round", False))
        assert ctx.state.round == 1 and ctx.state.unwritten_mark is None
        assert ctx.projects.store.list_versions("1")[-1]["published_version"] == version
    finally:
        backend.close()
