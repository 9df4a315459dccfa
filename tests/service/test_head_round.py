"""A round's head-first queue (ROUND_HEAD_FIRST, jobs/head_round.py): on a big pool, the served model
with its head refit on the labels serves `<version>-head` before the fine-tuning; off, or failing, it
changes nothing else of the round."""

import logging

import torch

from ml_backend.service import jobs
from tests.service.test_jobs import _label, context

BIG_POOL = {"FIRST_QUEUE_SAMPLE": "5", "ROUND_QUEUE_CANDIDATES": "10", "ROUND_QUEUE_AFTER_S": "0", "BATCH_SIZE": "8"}


def _published_with_labels(tmp_path, digits64, **env):
    backend, ctx, api = context(tmp_path, digits64, labeled=0, **{**BIG_POOL, **env})
    api.tasks_list = [dict(api.tasks_list[i % 20], id=i + 1, annotations=[]) for i in range(60)]
    jobs.publish(ctx)
    for task in api.tasks_list[:6]:
        _label(task, digits64)
    api.calls.clear()
    return backend, ctx, api


def test_the_head_version_serves_before_the_fine_tuning_and_only_its_head_differs(tmp_path, digits64, monkeypatch):
    backend, ctx, api = _published_with_labels(tmp_path, digits64)
    seen = {}
    real_serve = jobs.head_round.first_queue.serve

    def serve(ctx_, api_, model, version, tasks, total, what, name=None, scoring=None):
        if name and name.endswith("-head"):
            seen.update(model=model, served=ctx_.projects.model(ctx_.state), rounds=ctx_.state.round)
            seen["labeled"] = len(scoring["labeled_trunk"])
        return real_serve(ctx_, api_, model, version, tasks, total, what, name=name, scoring=scoring)

    monkeypatch.setattr(jobs.head_round.first_queue, "serve", serve)
    try:
        v0 = ctx.state.version
        jobs.run_round(ctx, force=True)
        assert seen["rounds"] == 0 and seen["labeled"] == 6  # before the fine-tuning, with the round's labels
        quick, served = seen["model"].target.state_dict(), seen["served"].target.state_dict()
        head = {f"{seen['model'].spec.head}.weight", f"{seen['model'].spec.head}.bias"}
        assert {k for k in quick if not torch.equal(quick[k], served[k])} == head
        head_imports = [c for c in api.calls[: api.calls.index(("switch", f"{v0}-head"))] if c[0] == "import"]
        assert sum(len(c[1]) for c in head_imports) == 15
        assert ctx.state.version != v0 and api.model_version == ctx.state.version  # the round went on
    finally:
        backend.close()


def test_off_the_round_is_served_as_before(tmp_path, digits64):
    backend, ctx, api = _published_with_labels(tmp_path, digits64, ROUND_HEAD_FIRST="false")
    try:
        jobs.run_round(ctx, force=True)
        v1 = ctx.state.version
        assert [c for c in api.calls if c[0] == "switch"] == [("switch", f"{v1}-first"), ("switch", v1)]
        assert ctx.status.last_round["head_queue"] is None
    finally:
        backend.close()


def test_a_failing_head_first_queue_does_not_fail_the_round(tmp_path, digits64, caplog):
    backend, ctx, api = _published_with_labels(tmp_path, digits64)
    real_import = api.import_predictions

    def refuse_head(predictions):
        if predictions[0]["model_version"].endswith("-head"):
            raise RuntimeError("Label Studio refused the import")
        return real_import(predictions)

    api.import_predictions = refuse_head
    try:
        with caplog.at_level(logging.WARNING):
            jobs.run_round(ctx, force=True)
        v1 = ctx.state.version
        assert ctx.state.round == 1 and api.model_version == v1 and ctx.status.last_round["head_queue"] is None
        assert [c for c in api.calls if c[0] == "switch"] == [("switch", f"{v1}-first"), ("switch", v1)]
        assert "no head-first queue this round" in caplog.text and "refused the import" in caplog.text
    finally:
        backend.close()


def _head_values(tmp_path, digits64, monkeypatch, **env):
    """The head-first version's predictions (label, acquisition) by task, and what /status recorded."""
    backend, ctx, api = _published_with_labels(tmp_path, digits64, **env)
    seen = {}
    score = backend.scorer.score

    def recording(state, tasks, model, version, **kw):
        out = score(state, tasks, model, version, **kw)
        if version.endswith("-head"):
            seen.update(
                {t["id"]: (r["result"][0]["value"]["choices"][0], r["acquisition"]) for t, r in zip(tasks, out)}
            )
        return out

    monkeypatch.setattr(backend.scorer, "score", recording)
    try:
        jobs.run_round(ctx, force=True)
        return seen, ctx.status.last_round["head_queue"]
    finally:
        backend.close()


def test_kept_embeddings_give_the_values_of_the_whole_trainable_part(tmp_path, digits64, monkeypatch):
    """The head-first queue of an embedding-only strategy (the default) runs only the head on the
    served version's embeddings, kept from its whole-pool scoring; the values and labels are those of
    the same model run through its whole trainable part."""
    fast, head = _head_values(tmp_path / "kept", digits64, monkeypatch)
    assert head["embeddings"] == "kept" and len(fast) == 15
    monkeypatch.setattr(jobs.head_round, "HEAD_NEEDS", frozenset())  # as for a strategy that hooks layers
    full, head = _head_values(tmp_path / "full", digits64, monkeypatch)
    assert head["embeddings"] == "computed by the whole trainable part" and set(full) == set(fast)
    for task, (label, value) in full.items():
        assert fast[task][0] == label and abs(fast[task][1] - value) <= 1e-5 * max(1.0, abs(value)), task


def test_only_when_the_last_fine_tuning_was_slow(tmp_path, digits64):
    """A fine-tuning that took at most ROUND_QUEUE_AFTER_S last round (a GPU, a small backbone) gets no
    head-first queue: its own comes soon enough; a slow one, or none timed yet, does."""
    backend, ctx, api = _published_with_labels(tmp_path, digits64, ROUND_QUEUE_AFTER_S="3")
    try:
        ctx.state.pool.scoring_seconds = 60.0  # a slow whole-pool scoring: the round candidates apply
        ctx.status.last_round = {"train_seconds": 2.5}
        v0 = ctx.state.version
        jobs.run_round(ctx, force=True)
        assert not [c for c in api.calls if c == ("switch", f"{v0}-head")]
        assert ctx.status.last_round["head_queue"] is None
        for task in api.tasks_list[6:9]:
            _label(task, digits64)
        api.calls.clear()
        ctx.state.pool.scoring_seconds = 60.0
        ctx.status.last_round["train_seconds"] = 30.0
        v1 = ctx.state.version
        jobs.run_round(ctx, force=True)
        assert ("switch", f"{v1}-head") in api.calls and ctx.status.last_round["head_queue"]["version"] == f"{v1}-head"
    finally:
        backend.close()
