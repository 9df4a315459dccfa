"""The adapted (target) model of one project: M0's body with a head sized to the project's labels,
the frozen trunk and the trainable rest, and the hooked forward passes that strategies need."""

from __future__ import annotations

import copy
import logging
import threading
from typing import Iterable, Sequence

import torch
from torch import nn

from ml_backend.core.backbones import LoadedBackbone
from ml_backend.errors import ConfigError
from strategies import Need
from strategies.layout import DEFAULT_THRESHOLD, Layout

log = logging.getLogger(__name__)


def _frozen_bn_eval(model: nn.Module, prefixes: Sequence[str]) -> None:
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and (name + ".").startswith(prefixes):
            module.eval()


def freeze_by_prefix(net: nn.Module, frozen: str | tuple[str, ...]) -> tuple[int, int]:
    """Freeze the parameters whose names start with ``frozen``; (trainable, total) parameter counts."""
    trainable = total = 0
    for name, p in net.named_parameters():
        is_frozen = name.startswith(frozen)
        p.requires_grad_(not is_frozen)
        total += p.numel()
        trainable += 0 if is_frozen else p.numel()
    return trainable, total


def new_linear(in_features: int, out_features: int, seed: int) -> nn.Linear:
    """A linear layer initialised from ``seed`` (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(in_features, out_features)


class AdaptedModel:
    """Target model for one project: M0's body with a head sized to the project's labels.

    Keeps M0 (``source``, frozen, with its source head) for strategies that need source-head
    probabilities. ``labels`` only grows: labels removed from the config keep their head rows
    (so nothing learned is lost) but are masked out of predictions via ``active``.
    """

    def __init__(
        self,
        base: LoadedBackbone,
        labels: Sequence[str],
        device: torch.device,
        seed: int = 0,
        layout: Layout | None = None,
        threshold: float = DEFAULT_THRESHOLD,
    ):
        if not labels:
            raise ValueError("a classifier needs at least one label")
        self.spec = base.spec
        self.weights = base.weights
        self.preprocess = base.preprocess
        self.device = device
        self.seed = seed
        self.source = base.model.to(device).eval()
        self.source_lock = base.lock
        for p in self.source.parameters():
            p.requires_grad_(False)
        self.target = copy.deepcopy(base.model)
        self.labels: list[str] = list(dict.fromkeys(labels))
        self.active: list[str] = list(self.labels)
        # Several <Choices> or a multi-label one (layout.py); None: one single-choice group
        self.layout: Layout | None = None if layout is None or layout.simple else layout
        self.threshold = float(threshold)  # a multi-label group predicts every label with p >= threshold
        in_features = self.head.in_features
        self.target.set_submodule(self.spec.head, new_linear(in_features, len(self.labels), seed))
        self.target.to(device)
        self.trainable, self.total = self.freeze()
        self.lock = threading.RLock()  # guards forward passes against head changes
        spec = self.spec
        log.info(
            "%s (%s): %d of %d parameters trainable; FREEZE=%s freezes %d of %d stages%s; labels: %s",
            spec.name,
            self.weights,
            self.trainable,
            self.total,
            spec.freeze,
            spec.n_frozen,
            len(spec.stages),
            f" (up to {spec.stages[spec.n_frozen - 1].name})" if spec.n_frozen else "",
            self.labels,
        )

    def clone(self) -> "AdaptedModel":
        """A copy to train: its own target and lock, sharing the frozen source model M0."""
        with self.lock:
            twin = copy.copy(self)
            twin.target = copy.deepcopy(self.target)
            twin.labels, twin.active = list(self.labels), list(self.active)
            twin.lock = threading.RLock()
        return twin

    @property
    def head(self) -> nn.Linear:
        return self.target.get_submodule(self.spec.head)

    def freeze(self) -> tuple[int, int]:
        """Freeze the early layers by name; returns (trainable, total) parameter counts."""
        return freeze_by_prefix(self.target, self.spec.frozen)

    def train_mode(self) -> None:
        """model.train() with frozen BatchNorm kept in eval mode (running stats must not drift)."""
        self.target.train()
        _frozen_bn_eval(self.target, self.spec.frozen)

    @property
    def structured(self) -> bool:
        """Not the classic single-choice classifier (several groups, or multi-label)."""
        return self.layout is not None

    def set_labels(self, labels: Sequence[str], layout: Layout | None = None) -> list[str]:
        """Follow a changed label config. New labels grow the head (old rows are kept unchanged);
        removed labels are masked out. Returns the labels that were added. ``layout``: the
        config's groups (None or simple: one single-choice group)."""
        wanted = list(dict.fromkeys(labels))
        if layout is not None and not layout.simple and list(layout.flat) != wanted:
            raise ValueError(f"the layout's outputs {list(layout.flat)} are not the labels {wanted}")
        if not wanted:
            raise ValueError("a classifier needs at least one label")
        added = [label for label in wanted if label not in self.labels]
        with self.lock:
            if added:
                old = self.head
                new = new_linear(old.in_features, len(self.labels) + len(added), self.seed + len(self.labels))
                new = new.to(old.weight.device, old.weight.dtype)
                with torch.no_grad():
                    new.weight[: len(self.labels)] = old.weight
                    new.bias[: len(self.labels)] = old.bias
                self.target.set_submodule(self.spec.head, new)
                self.labels.extend(added)
                log.info("label config grew by %s; classifier head now has %d outputs", added, len(self.labels))
            self.active = wanted
            self.layout = None if layout is None or layout.simple else layout
        return added

    @torch.no_grad()
    def trunk(self, batch: torch.Tensor) -> torch.Tensor:
        """Activations at the freeze boundary (identical for M0 and the target: frozen layers never
        change), as float32 on the CPU, ready for the frozen-feature cache."""
        with self.lock:
            self.target.eval()
            return self.spec.trunk(self.target, batch.to(self.device, non_blocking=True)).float().cpu()

    @torch.no_grad()
    def forward(self, batch: torch.Tensor, needs: Iterable[Need], layers: Sequence[str] = ()) -> dict:
        """Full forward pass from preprocessed images; see :meth:`forward_from_trunk`."""
        return self.forward_from_trunk(self.trunk(batch), needs, layers)

    def resolve_layer(self, layer: str) -> tuple[str, bool, bool]:
        """A role ("A", "B", "A2", ...) or module name -> (module name, apply ReLU, hook the input)."""
        try:
            name = self.spec.role_module(layer)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        name, as_input = (name[:-3], True) if name.endswith(":in") else (name, False)
        return (name[:-5], True, as_input) if name.endswith("+relu") else (name, False, as_input)

    @torch.no_grad()
    def forward_from_trunk(self, z: torch.Tensor, needs: Iterable[Need], layers: Sequence[str] = ()) -> dict:
        """Run only the trainable part on trunk activations, computing every declared input once.

        Returns a dict with 'logits' and 'probs' over ``active`` labels (always: a softmax, or per
        group of a structured layout a softmax or sigmoids), plus
        'embeddings', 'features' (current model), 'source_probs' and 'source_features' (M0) when
        asked for.
        """
        needs = set(needs)
        z = z.to(self.device, non_blocking=True)
        with self.lock:
            self.target.eval()
            captured: dict[str, torch.Tensor] = {}
            hook = None
            if Need.EMBEDDINGS in needs:  # the head's input
                hook = self.head.register_forward_pre_hook(
                    lambda _m, args: captured.__setitem__("embeddings", args[0].detach().flatten(1).clone())
                )
            try:
                logits_all, feats = hooked(self, self.target, z, layers if Need.FEATURES in needs else ())
            finally:
                if hook is not None:
                    hook.remove()
            logits = logits_all[:, self.active_index()].float()
            probs = logits.softmax(dim=1) if self.layout is None else self.layout.probs(logits)
            out = {"logits": logits.cpu(), "probs": probs.cpu()}
            if Need.EMBEDDINGS in needs:
                out["embeddings"] = captured["embeddings"].float().cpu()
            if Need.FEATURES in needs:
                out["features"] = {k: v.cpu() for k, v in feats.items()}
        if Need.SOURCE_PROBS in needs or Need.SOURCE_FEATURES in needs:
            with self.source_lock:  # M0 is shared by every project: its hooks must not interleave
                src_logits, src_feats = hooked(self, self.source, z, layers if Need.SOURCE_FEATURES in needs else ())
            if Need.SOURCE_PROBS in needs:
                out["source_probs"] = src_logits.float().softmax(dim=1).cpu()
            if Need.SOURCE_FEATURES in needs:
                out["source_features"] = {k: v.cpu() for k, v in src_feats.items()}
        return out

    def logits_for_training(self, z: torch.Tensor) -> torch.Tensor:
        """Logits over all head rows with autograd, from trunk activations (call train_mode first)."""
        return self.spec.rest(self.target, z)

    def active_index(self) -> list[int]:
        """The head rows of the active outputs, in order."""
        return [self.labels.index(label) for label in self.active]

    def decode(self, probs: torch.Tensor) -> list:
        """What each row of ``probs`` (over the active outputs) predicts: a label, or for a
        structured layout an answer dict (layout.py)."""
        if self.layout is None:
            return [self.active[j] for j in probs.argmax(dim=1).tolist()]
        return self.layout.decode(probs, self.threshold)

    def canonical(self, predicted) -> str:
        """A prediction of :meth:`decode` as the canonical answer string."""
        return predicted if self.layout is None else self.layout.canonical(predicted)

    def load_target_state(self, state_dict: dict, labels: Sequence[str], active: Sequence[str]) -> None:
        """Restore a checkpointed target (its head sized to ``labels``)."""
        with self.lock:
            head = self.head
            if len(labels) != head.out_features:
                new = nn.Linear(head.in_features, len(labels)).to(head.weight.device)
                self.target.set_submodule(self.spec.head, new)
            self.target.load_state_dict(state_dict)
            self.labels, self.active = list(labels), list(active)
            self.freeze()


def hooked(model: "AdaptedModel", net: nn.Module, z: torch.Tensor, layers: Sequence[str]) -> tuple[torch.Tensor, dict]:
    """``model``'s rest(net, z) with the outputs of ``layers`` captured (cloned: in-place ReLUs follow)."""
    captured: dict[str, torch.Tensor] = {}
    hooks = []

    def keep(layer, relu):
        def hook(_m, _a, out):
            if layer in captured:
                raise ValueError(f"layer {layer} runs twice per forward pass; hook another module")
            captured[layer] = (torch.relu(out) if relu else out).detach().float().clone()

        return hook

    for layer in layers:
        name, relu, as_input = model.resolve_layer(layer)
        module = net.get_submodule(name)
        if as_input:
            hooks.append(module.register_forward_pre_hook(lambda m, args, _k=keep(layer, relu): _k(m, args, args[0])))
        else:
            hooks.append(module.register_forward_hook(keep(layer, relu)))
    try:
        out = model.spec.rest(net, z)
    finally:
        for h in hooks:
            h.remove()
    missing = [layer for layer in layers if layer not in captured]
    if missing:
        raise ValueError(
            f"layers {missing} are inside the frozen trunk of {model.spec.name}; "
            "strategies can only hook layers after the freeze boundary"
        )
    return out, captured
