"""A round's head-first queue (docs/methods.md §0, "A round's head-first queue"). On a big pool, before the
round's fine-tuning (about a minute of a CPU for the default backbone): the served model with only
its head refit on the labels (milliseconds: ``core/trainer.fit_head``) scores the round's candidates
(``first_queue.round_candidates``: the served version's most valuable unlabeled tasks and the keyed
sample) as the whole pool of ``<version>-head``, and the project switches to it. The fine-tuned
version's ``-first`` and then its whole pool replace it, as after any round."""

from __future__ import annotations

import dataclasses
import logging
import time

import torch

from ml_backend.core.review import trunk_of
from ml_backend.core.scoring import HEAD_NEEDS, forward_batches, head_outputs, rest_rows, scoring_needs
from ml_backend.core.trainer import Example, fit_head
from ml_backend.errors import ImageError
from ml_backend.service.jobs import first_queue
from ml_backend.service.jobs.context import JobContext
from strategies import Need

log = logging.getLogger(__name__)

SUFFIX = "-head"


def serve(ctx: JobContext, served, examples: list[Example], pool: list[dict], round_: int) -> dict | None:
    """Serve ``<served version>-head`` from the round's candidates (``served``: a copy of the served
    model, its labels set to the config's; ``examples``: the round's labels; ``pool``: the unlabeled
    tasks). Returns what was done (for ``/status``), or None when not wanted: ``ROUND_HEAD_FIRST`` is
    off, the last round's fine-tuning took at most ``ROUND_QUEUE_AFTER_S`` (a GPU, a small backbone:
    its own queue comes soon enough), or ``ROUND_QUEUE_CANDIDATES`` does not apply (the whole pool
    is scored fast enough)."""
    state, settings = ctx.state, ctx.settings
    trained_in = (ctx.status.last_round or {}).get("train_seconds")  # None: no round timed yet
    if not settings.round_head_first or (trained_in is not None and trained_in <= settings.round_queue_after_s):
        return None
    name = f"{state.version}{SUFFIX}"
    with state.lock:
        values = dict(state.pool.acquisitions)  # the served version's: its best tasks are candidates
    candidates = first_queue.round_candidates(ctx, pool, name, values)
    if not candidates:
        return None
    started = time.perf_counter()
    quick = served.clone()
    trunks = [trunk_of(quick, e) for e in examples]
    z = torch.stack(trunks)
    h = forward_batches(quick, z, {Need.EMBEDDINGS}, (), rest_rows(z, settings.batch_size))["embeddings"]
    fit = fit_head(
        quick,
        [dataclasses.replace(e, embedding=h[i]) for i, e in enumerate(examples)],
        settings.train_config(seed=settings.seed + round_),
    )
    scoring: dict = {"labeled_trunk": trunks}
    if scoring_needs(ctx.scorer.strategy_of(state), None, {}) <= HEAD_NEEDS:  # only the head runs on the candidates
        scoring.update(prepared=_embeddings(ctx, served, candidates), forward=head_outputs)
    what = f"head-first queue: the head refit on {len(examples)} labels scoring {len(candidates)} candidates"
    done = first_queue.serve(ctx, ctx.api(), quick, state.version, candidates, len(pool), what, name, scoring)
    done.update(
        embeddings="kept" if "prepared" in scoring else "computed by the whole trainable part",
        head_seconds=round(fit["seconds"], 3),
        loss_first=fit["loss_first"],
        loss_last=fit["loss_last"],
        seconds=round(time.perf_counter() - started, 3),
    )
    return done


def _embeddings(ctx: JobContext, served, candidates: list[dict]) -> list:
    """The served version's embeddings of ``candidates``: those its last whole-pool scoring kept
    (``scorer.keep_candidate_embeddings``), the others from their trunk activations (the feature
    cache), or the ImageError that explains why a task has none."""
    state = ctx.state
    with state.lock:
        kept = state.pool.embeddings if state.pool.scored_version == state.version else {}
    out = [kept.get(str(t["id"])) for t in candidates]
    missing = [i for i, h in enumerate(out) if h is None]
    if missing:
        trunks = ctx.features.trunk_activations(state, served, [candidates[i] for i in missing])
        good = [(i, z) for i, z in zip(missing, trunks) if not isinstance(z, ImageError)]
        for i, z in zip(missing, trunks):
            if isinstance(z, ImageError):  # the reason it gets an empty prediction
                out[i] = z
        if good:
            z = torch.stack([z for _, z in good])
            h = forward_batches(served, z, {Need.EMBEDDINGS}, (), rest_rows(z, ctx.settings.batch_size))
            for (i, _), row in zip(good, h["embeddings"]):
                out[i] = row
    log.info("project %s: %d of %d candidates' embeddings kept", state.key, len(out) - len(missing), len(out))
    return out
