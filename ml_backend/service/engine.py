"""Where the heavy per-task work runs: in this process (``SCORING_ENGINE=local``, the default) or
on a Ray cluster (``SCORING_ENGINE=ray``, ``pip install active-adaptation[ray]``), for pools that
outgrow one machine.

Two kinds of work scale with the pool, and both go to a pool of Ray actors created once
(``RAY_ACTORS``, each with its own copy of the backbone, ``RAY_CPUS_PER_ACTOR`` CPUs and
``RAY_GPUS_PER_ACTOR`` GPUs), in batches of ``BATCH_SIZE`` tasks (``ray.util.ActorPool``; Ray Data's
``map_batches`` would start a new actor pool, loading the model again, for every call):

* **feature extraction**, once per task: download, decode, preprocess and the frozen trunk
  (:meth:`RayEngine.trunk`); the activations come back to the frozen-feature cache;
* **re-scoring**, every round: the trainable part on the cached activations
  (:meth:`RayEngine.forward`); the served model's trainable weights are put in Ray's object store
  once per version and every actor loads them.

The strategy stays one call on the gathered outputs (``core/scoring.py``): a pool-relative
strategy (core-set, BADGE, TypiClust, ...) needs the whole pool at once; per-item strategies could
reduce over shards, but gathering keeps one code path and the outputs are small (probabilities,
embeddings) next to the work that produced them. The results are those of the local path to
within float rounding (a test checks 1e-6).
"""

from __future__ import annotations

import logging
import os
import tempfile
from typing import Sequence

import numpy as np
import torch

from ml_backend.errors import ConfigError, ImageError

log = logging.getLogger(__name__)


def _backbone(config: dict):
    from ml_backend.core.backbones import load_backbone

    return load_backbone(config["backbone"], config["weights"], config["seed"], config["freeze"], config["image_size"])


class _Worker:
    """A Ray actor, kept for the engine's life: one backbone (the frozen trunk, for feature
    extraction) and, once a model is loaded, the trainable part of the served model (re-scoring)."""

    def __init__(self, config: dict):
        from ml_backend.service.images import ImageLoader

        torch.set_num_threads(max(1, int(config.get("threads", 1))))
        self.config = config
        self.base = _backbone(config)
        self.device = torch.device(config["device"])
        self.trunk_model = self.base.model.eval().to(self.device)
        cache = config.get("image_cache") or tempfile.mkdtemp(prefix="aa-ray-images-")
        self.loader = ImageLoader(
            cache,
            4,
            config["max_bytes"],
            config["max_pixels"],
            config["timeout"],
            per_host=config.get("per_host", 8),
            draft_side=self.base.preprocess.resize,  # decoded as in this process (features.DECODING)
        )
        self.model = None
        self.loaded = None

    def node(self) -> str:
        """The id of the Ray node this actor runs on (where a cluster placed it)."""
        import ray

        return ray.get_runtime_context().get_node_id()

    def trunk(self, refs: list, hostname: str, token: str | None) -> list:
        """Per (task id, reference): float32 activations as numpy, or the error message."""
        images, out = [], []
        for task_id, ref in refs:
            try:
                images.append(self.base.preprocess(self.loader.load(task_id, ref, hostname, token)))
                out.append(None)
            except ImageError as exc:
                images.append(None)
                out.append(str(exc) or "unreadable image")
        ok = [i for i, x in enumerate(images) if x is not None]
        if ok:
            with torch.no_grad():
                z = self.base.spec.trunk(self.trunk_model, torch.stack([images[i] for i in ok]).to(self.device))
            for j, i in enumerate(ok):
                out[i] = z[j].float().cpu().numpy()
        return out

    def load(self, key: str, weights: dict, labels: list, active: list, layout: list | None = None) -> None:
        """The served model's weights (once per version: ``key``); ``layout``: its groups
        (``Layout.to_dict``; None: one single-choice group)."""
        from ml_backend.core.adapted import AdaptedModel
        from strategies.layout import Layout

        if self.loaded == key:
            return
        if self.model is None or list(self.model.labels) != list(labels):
            self.model = AdaptedModel(self.base, labels, self.device, self.config["seed"])
        self.model.load_target_state(weights, labels, active)
        self.model.layout = None if layout is None else Layout.from_dict(layout)
        self.loaded = key

    def forward(self, z, needs: list, layers: list) -> dict:
        from strategies import Need

        out = self.model.forward_from_trunk(torch.from_numpy(z), {Need(n) for n in needs}, tuple(layers))
        return {
            k: (
                {n: t.detach().float().cpu().numpy() for n, t in v.items()}
                if isinstance(v, dict)
                else v.detach().float().cpu().numpy()
            )
            for k, v in out.items()
        }


class RayEngine:
    """Feature extraction and re-scoring on a pool of Ray actors (see the module's docstring)."""

    def __init__(self, settings, address: str | None = None):
        try:
            import ray
            from ray.util import ActorPool
        except ImportError:
            raise ConfigError("SCORING_ENGINE=ray needs Ray: pip install 'active-adaptation[ray]'") from None
        if not ray.is_initialized():
            kwargs = {"address": address} if address else {"num_cpus": os.cpu_count() or 1}
            ray.init(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True, **kwargs)
        self.ray, self.batch = ray, max(1, settings.batch_size)
        gpus, cpus = settings.ray_gpus_per_actor, settings.ray_cpus_per_actor
        config = {
            "backbone": settings.backbone,
            "weights": settings.weights,
            "seed": settings.seed,
            "freeze": settings.freeze,
            "image_size": settings.image_size,
            "device": "cuda" if gpus > 0 else "cpu",
            "threads": max(1, int(cpus)),
            "max_bytes": settings.image_max_bytes,
            "max_pixels": settings.image_max_pixels,
            "timeout": settings.image_timeout_s,
            "per_host": settings.download_connections_per_host,
        }
        remote = ray.remote(num_cpus=cpus, num_gpus=gpus)(_Worker)
        self.workers = [remote.remote(config) for _ in range(max(1, settings.ray_actors))]
        self.pool = ActorPool(self.workers)
        self._loaded: str | None = None  # which model's weights the actors hold
        log.info(
            "scoring engine: Ray at %s, %d actor(s), %g CPU and %g GPU each",
            address or "a local instance",
            len(self.workers),
            cpus,
            gpus,
        )

    def _chunks(self, items: Sequence) -> list:
        return [items[s : s + self.batch] for s in range(0, len(items), self.batch)]

    def trunk(self, refs: Sequence[tuple], hostname: str, token: str | None) -> list:
        """Per (task id, image reference): its trunk activations, or the ImageError."""
        chunks = self._chunks([(str(t), r if isinstance(r, str) else "") for t, r in refs])
        out = []
        for part in self.pool.map(lambda actor, c: actor.trunk.remote(c, hostname, token), chunks):
            out += [
                ImageError(x) if isinstance(x, str) else torch.from_numpy(np.asarray(x, dtype=np.float32)) for x in part
            ]
        return out

    def forward(self, model, z: torch.Tensor, needs, layers: Sequence[str] = ()) -> dict:
        """``model.forward_from_trunk`` over every row of ``z``, on the actors."""
        state = {k: v.detach().cpu() for k, v in model.target.state_dict().items()}
        layout = None if model.layout is None else model.layout.to_dict()
        key = f"{id(model)}:{sum(float(v.float().sum()) for v in state.values() if v.is_floating_point())}:{layout}"
        if key != self._loaded:  # the actors hold these weights already: nothing to send
            weights = self.ray.put(state)
            self.ray.get(
                [w.load.remote(key, weights, list(model.labels), list(model.active), layout) for w in self.workers]
            )
            self._loaded = key
        names = sorted(n.value for n in needs)
        parts = list(
            self.pool.map(lambda actor, c: actor.forward.remote(c, names, list(layers)), self._chunks(z.numpy()))
        )
        merged: dict = {}
        for key_ in parts[0] if parts else ():
            if isinstance(parts[0][key_], dict):
                merged[key_] = {
                    n: torch.from_numpy(np.concatenate([p[key_][n] for p in parts])) for n in parts[0][key_]
                }
            else:
                merged[key_] = torch.from_numpy(np.concatenate([p[key_] for p in parts]))
        return merged

    def close(self) -> None:
        for worker in self.workers:
            self.ray.kill(worker)


def make_engine(settings):
    """None for the local path; a RayEngine for SCORING_ENGINE=ray."""
    if settings.scoring_engine == "ray":
        return RayEngine(settings, settings.ray_address or None)
    return None
