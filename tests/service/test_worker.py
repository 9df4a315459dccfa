"""The worker's state machine, driven directly with a fake clock: no threads, no sleeps."""

import pytest

from ml_backend.service.worker import ProjectWorker
from tests.helpers import FakeClock, drain


class Jobs:
    """Records what the worker runs; fails the next ``fail`` runs."""

    def __init__(self, fail=0):
        self.ran, self.fail = [], fail

    def __call__(self, job, control):
        self.ran.append(job)
        if self.fail:
            self.fail -= 1
            raise RuntimeError("Label Studio said no")


def make(jobs, clock, **kw):
    return ProjectWorker("7", jobs, debounce_s=5.0, recovery_max_s=60.0, clock=clock, **kw)


def test_a_burst_of_events_gives_exactly_one_round_after_a_quiet_period():
    clock, jobs = FakeClock(), Jobs()
    worker = make(jobs, clock)
    for _ in range(200):  # 200 events over 9.95 s
        worker.labels_changed()
        assert worker.next_job() == (None, pytest.approx(5.0))
        assert worker.info["state"] == "waiting"
        clock.now += 0.05
    clock.now += 4.9  # 4.95 s after the last event: still debouncing
    assert worker.run_once() is None and jobs.ran == []
    clock.now += 0.1
    assert drain(worker) == [("round", False)]
    assert jobs.ran == [("round", False)]
    clock.now += 3600
    assert drain(worker) == [] and worker.next_job() == (None, None)


def test_start_training_forces_a_round_and_a_later_label_event_keeps_the_force():
    clock, jobs = FakeClock(), Jobs()
    worker = make(jobs, clock)
    worker.labels_changed(force=True)
    clock.now += 1
    worker.labels_changed()  # an ordinary event in the same burst does not weaken it
    clock.now += 5
    assert drain(worker) == [("round", True)]


def test_a_failure_sets_failed_with_the_reason_and_is_retried_with_back_off():
    clock, jobs = FakeClock(), Jobs(fail=2)
    worker = make(jobs, clock)
    worker.request_publish()
    assert drain(worker) == [("publish", None)]
    assert worker.info["state"] == "failed"
    assert "publish failed: RuntimeError: Label Studio said no" in worker.info["reason"]
    assert worker.info["last_error"] == "RuntimeError: Label Studio said no" and worker.info["retry_in_s"] == 5.0
    clock.now += 4.9
    assert drain(worker) == [] and worker.next_job()[1] == pytest.approx(0.1)
    clock.now += 0.1
    assert drain(worker) == [("publish", None)]  # retried; fails again: the wait doubles
    assert worker.info["retry_in_s"] == 10.0
    clock.now += 10
    assert drain(worker) == [("publish", None)]  # succeeds: the retry is cleared
    assert not worker.retries and worker.info["retry_in_s"] is None
    clock.now += 3600
    assert drain(worker) == []


def test_a_second_failure_of_another_kind_keeps_the_first_for_the_retry():
    """Found by the soak (Label Studio stopped): a publish failed, then a config check failed, and the
    worker kept only the config check for its retry: the publish waited for the next event."""
    clock, jobs = FakeClock(), Jobs(fail=2)
    worker = make(jobs, clock)
    worker.request_publish()
    assert drain(worker) == [("publish", None)]
    worker.request_config_check()
    assert drain(worker) == [("config", None)]  # fails too, while the publish waits for its retry
    assert set(worker.retries) == {"publish", "config"} and worker.info["retry_in_s"] == 10.0
    clock.now += 10
    assert sorted(drain(worker)) == [("config", None), ("publish", None)]  # both run again, and succeed
    assert not worker.retries and worker.info["retry_in_s"] is None
    clock.now += 3600
    assert drain(worker) == []


def test_a_failed_round_is_retried_without_debounce_and_counted():
    clock, jobs = FakeClock(), Jobs(fail=1)
    worker = make(jobs, clock)
    worker.labels_changed(force=True)
    clock.now += 5
    assert drain(worker) == [("round", True)] and worker.info["failed_runs"] == 1
    clock.now += 5
    assert drain(worker) == [("round", True)]  # the force survives the retry


def test_order_config_then_webhook_then_round_then_publish_then_new_tasks_then_rescoring():
    clock, jobs = FakeClock(), Jobs()
    worker = make(jobs, clock)
    worker.request_rescore()
    worker.tasks_created([5, 3])
    worker.request_publish()
    worker.labels_changed()
    worker.request_secure()
    worker.request_config_check()
    clock.now += 5
    assert drain(worker) == [
        ("config", None),
        ("secure", None),
        ("round", False),
        ("publish", None),
        ("tasks", [3, 5]),
        ("rescore", None),
    ]
    worker.request_secure()  # at most once a minute
    assert drain(worker) == []
    clock.now += 60
    worker.request_secure()
    assert drain(worker) == [("secure", None)]


def test_a_served_version_left_unpublished_after_a_job_is_published():
    clock, jobs = FakeClock(), Jobs()
    pending = [True]
    worker = make(jobs, clock, wants_publish=lambda: pending.pop() if pending else False)
    worker.request_config_check()  # e.g. the label config grew: a new version to publish
    assert drain(worker) == [("config", None), ("publish", None)]


def test_a_project_gone_from_label_studio_is_not_retried():
    import requests

    def gone(job, control):
        response = requests.Response()
        response.status_code = 404
        raise requests.HTTPError("404 Not Found", response=response)

    clock = FakeClock()
    worker = make(gone, clock)
    worker.request_publish()
    drain(worker)
    assert worker.info["state"] == "failed" and "no project 7" in worker.info["reason"] and not worker.retries


def test_stop_ends_the_thread():
    worker = ProjectWorker("8", Jobs(), debounce_s=0.0, recovery_max_s=1.0).start()
    worker.stop()
    worker.thread.join(5)
    assert not worker.thread.is_alive()


def test_a_round_is_due_for_a_background_import_only_once_its_debounce_has_passed():
    clock, jobs = FakeClock(), Jobs()
    worker = make(jobs, clock)
    assert not worker.round_due()
    worker.labels_changed()
    clock.now += 4.9
    assert not worker.round_due()  # annotators are still at it: the import goes on
    clock.now += 0.2
    assert worker.round_due()
    assert drain(worker) == [("round", False)] and not worker.round_due()
    worker.stop()
    assert worker.round_due()  # stopping: give way too


def test_annotators_who_never_pause_still_get_a_round_every_debounce_max():
    """Found by the soak (benchmarks/soak.py): four annotators labeling without a pause of
    TRAIN_DEBOUNCE_S never let the debounce end, so no round ever started. TRAIN_DEBOUNCE_MAX_S caps
    the wait from the first event a round has not read."""
    clock, jobs = FakeClock(), Jobs()
    worker = make(jobs, clock, debounce_max_s=30.0)
    rounds_at = []
    for step in range(900):  # an event every second for 15 minutes
        worker.labels_changed()
        if drain(worker):
            rounds_at.append(step)
        clock.now += 1.0
    assert rounds_at[:3] == [30, 61, 92]  # 30 s after the first event each round has not read
    assert len(rounds_at) == 29
    # a burst shorter than the cap still gives one round, after its quiet period
    clock.now += 3600
    drain(worker)
    jobs.ran.clear()
    for _ in range(10):
        worker.labels_changed()
        clock.now += 1.0
    clock.now += 4.0
    assert drain(worker) == [("round", False)] and len(jobs.ran) == 1
