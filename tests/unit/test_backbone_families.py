"""One representative of every supported backbone family, with random weights: the stage split is
exact, the freeze boundary is what FREEZE says, /predict answers, a training round changes exactly
the trainable part, and every strategy either scores or is refused with its reason.
(`python -m benchmarks.backbone_sweep` runs the same checks over every listed architecture.)"""

import copy
import math

import pytest
import torch

import strategies
from ml_backend.app import create_app
from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.architectures import (
    available_backbones,
    describe_backbones,
    freeze_boundary,
    get_backbone,
    refused_backbones,
)
from ml_backend.core.backbones import load_backbone
from ml_backend.core.families import FAMILIES
from ml_backend.core.scoring import score_pool
from ml_backend.core.trainer import Example, TrainConfig, fine_tune
from ml_backend.demo.servers import classification_config
from ml_backend.errors import ConfigError
from ml_backend.service.settings import Settings
from tests.helpers import tasks_from

# family -> (its smallest architecture, the input side used here)
REPRESENTATIVES = {
    "resnet": ("resnet18", 64),
    "vgg": ("vgg11", 64),
    "alexnet": ("alexnet", 64),
    "efficientnet": ("efficientnet_b0", 64),
    "mobilenetv2": ("mobilenet_v2", 64),
    "mobilenetv3": ("mobilenet_v3_small", 64),
    "convnext": ("convnext_tiny", 64),
    "regnet": ("regnet_x_400mf", 64),
    "densenet": ("densenet121", 64),
    "mnasnet": ("mnasnet0_5", 64),
    "shufflenetv2": ("shufflenet_v2_x0_5", 64),
    "googlenet": ("googlenet", 64),
    "inception": ("inception_v3", 75),
    "vision_transformer": ("vit_b_32", 224),
    "swin_transformer": ("swin_t", 64),
    "maxvit": ("maxvit_t", 224),
    "smallcnn": ("smallcnn", 32),
    "timm_efficientnet": ("efficientnet_lite0", 64),
}
CPU = torch.device("cpu")


def test_every_family_has_a_representative_and_every_torchvision_architecture_a_family():
    import torchvision

    served = {row["family"] for row in describe_backbones() if not row["refused"]}
    assert served == set(REPRESENTATIVES)
    listed = set(torchvision.models.list_models(module=torchvision.models))
    assert listed == (set(available_backbones()) | set(refused_backbones())) - {
        "smallcnn",
        "smallcnn-unfrozen",
        "efficientnet_lite0",
    }
    assert set(refused_backbones()) == {"squeezenet1_0", "squeezenet1_1"}


def test_refused_family_says_why():
    with pytest.raises(ConfigError, match="squeezenet1_0 is not supported: its classifier is a 1x1 convolution"):
        get_backbone("squeezenet1_0")
    with pytest.raises(ConfigError, match="not supported: its classifier is a 1x1 convolution"):
        Settings.from_env({"BACKBONE": "squeezenet1_1"})


@pytest.fixture(scope="module")
def built():
    cache = {}

    def get(family):
        if family not in cache:
            name, side = REPRESENTATIVES[family]
            cache.clear()  # one big model in memory at a time
            cache[family] = (load_backbone(name, "none"), side)
        return cache[family]

    return get


@pytest.mark.parametrize("family", sorted(REPRESENTATIVES))
def test_family_splits_exactly_and_trains_only_what_is_not_frozen(family, built):
    base, side = built(family)
    spec = base.spec
    x = torch.randn(2, 3, side, side, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(spec.rest(base.model, spec.trunk(base.model, x)), base.model(x))
    model = AdaptedModel(base, ["a", "b", "c"], CPU)
    assert 0 < spec.n_frozen < len(spec.stages) and model.head.out_features == 3
    # the trunk depends on exactly the frozen parameters (by autograd: some families call modules functionally)
    net = copy.deepcopy(base.model).eval()
    for p in net.parameters():
        p.requires_grad_(True)
    spec.trunk(net, x).float().sum().backward()
    assert {n for n, p in net.named_parameters() if p.grad is not None} == {
        n for n, p in model.target.named_parameters() if not p.requires_grad
    }
    with torch.no_grad():
        z = spec.trunk(model.target, x)
    # one training round moves every trainable parameter that gets a gradient, and no frozen one
    before = {n: p.detach().clone() for n, p in model.target.named_parameters()}
    examples = [Example(f"{i}", i % 3, True, trunk=z[i % 2].clone()) for i in range(6)]
    fine_tune(model, examples, TrainConfig(steps=2, batch_size=4, seed=0))
    after = dict(model.target.named_parameters())
    assert all(torch.equal(before[n], p) for n, p in after.items() if not p.requires_grad)
    assert not torch.equal(before[f"{spec.head}.weight"], after[f"{spec.head}.weight"])


@pytest.mark.parametrize("family", sorted(REPRESENTATIVES))
def test_every_strategy_scores_or_is_refused_with_the_reason(family, built):
    base, side = built(family)
    model = AdaptedModel(base, ["a", "b", "c"], CPU)
    x = torch.randn(8, 3, side, side, generator=torch.Generator().manual_seed(1))
    z = model.trunk(x)
    keys = [f"{i:03d}" for i in range(6)]
    scored, refused = [], []
    for name in strategies.available():
        strategy = strategies.from_spec(name, seed=0)
        try:
            base.spec.require_layers(strategy.layers(), name)
        except ConfigError as exc:
            message = str(exc)
            role = message.split("needs layer role ")[1].split(",")[0]
            assert dict(base.spec.missing)[role] in message  # the family's own reason
            refused.append(name)
            continue
        out = score_pool(
            strategy,
            model,
            [(keys, None, z[:6])],
            candidates=keys,
            labeled_trunk=z[6:],
            images=lambda: x[:6],
            round_=0,
            state={},
            batch_size=4,
        )
        assert out.values.shape == (6,) and all(math.isfinite(v) for v in out.values.tolist()), name
        scored.append(name)
    assert {"margin", "emoc", "badge", "coreset", "typiclust", "probcover"} <= set(scored)
    expected_refusals = {"adma"} if "A" in dict(base.spec.missing) else set()
    assert set(refused) == expected_refusals


@pytest.mark.parametrize("family", sorted(REPRESENTATIVES))
def test_predict_through_the_backend(family, tmp_path, digits64):
    name, side = REPRESENTATIVES[family]
    settings = Settings.from_env(
        {
            "BACKBONE": name,
            "WEIGHTS": "none",
            "IMAGE_SIZE": str(side),
            "MODEL_DIR": str(tmp_path),
            "DEVICE": "cpu",
            "STRATEGY": "margin",
        }
    )
    app = create_app(settings)
    try:
        client = app.test_client()
        config = classification_config(["a", "b"])
        r = client.post("/predict", json={"tasks": tasks_from(digits64[:3]), "project": "1", "label_config": config})
        assert r.status_code == 200, r.json
        results = r.json["results"]
        assert len(results) == 3 and all(item["result"][0]["value"]["choices"][0] in ("a", "b") for item in results)
    finally:
        app.extensions["backend"].close()


def test_a_strategy_the_backbone_cannot_serve_is_refused_at_startup(tmp_path):
    settings = Settings.from_env(
        {"BACKBONE": "vit_b_32", "WEIGHTS": "none", "MODEL_DIR": str(tmp_path), "DEVICE": "cpu", "STRATEGY": "adma"}
    )
    with pytest.raises(
        ConfigError,
        match="STRATEGY=adma needs layer role A, which vit_b_32 does not declare: ADMA's "
        "layer A is a convolutional feature map",
    ):
        create_app(settings)


def test_freeze_moves_the_boundary(caplog):
    stages = get_backbone("resnet18").stages
    assert [s.name for s in stages][:4] == ["maxpool", "layer1.0", "layer1.1", "layer2.0"]
    assert get_backbone("resnet18").n_frozen == 4  # the ADMA paper's first eight weight layers
    assert get_backbone("resnet18", "none").n_frozen == 0 and get_backbone("resnet18", "all").n_frozen == 9
    assert get_backbone("resnet18", "layer2").n_frozen == 5 and get_backbone("resnet18", "layer3.0").n_frozen == 6
    assert get_backbone("resnet18", "0.5").n_frozen == 4 and get_backbone("resnet18", "1.0").n_frozen == 9
    assert freeze_boundary(stages, "conv1", 0) == 1
    with pytest.raises(ConfigError, match="FREEZE='layer9' names no stage; .* one of: maxpool, layer1.0"):
        get_backbone("resnet18", "layer9")
    # a boundary past ADMA's layers refuses ADMA, naming the setting
    with pytest.raises(
        ConfigError, match="needs layer A \\(layer4.0\\), which FREEZE=all puts inside the frozen trunk"
    ):
        get_backbone("resnet18", "all").require_layers(["A"], "adma")
    with caplog.at_level("INFO"):
        model = AdaptedModel(load_backbone("resnet18", "none", freeze="layer3"), ["a", "b"], CPU)
    assert (
        f"{model.trainable} of {model.total} parameters trainable; FREEZE=layer3 freezes 7 of 9 stages" in caplog.text
    )
    assert model.trainable == sum(
        p.numel() for n, p in model.target.named_parameters() if n.startswith(("layer4", "fc"))
    )
    base = load_backbone("resnet18", "none", freeze="layer3")  # what the backend logs at start
    trainable = sum(p.numel() for n, p in base.model.named_parameters() if n.startswith(("layer4", "fc")))
    assert f"FREEZE=layer3 freezes 7 of 9 stages (up to layer3.1): {trainable} of " in base.freeze_summary()


def test_image_size_is_checked_against_the_architecture():
    assert load_backbone("smallcnn", "none", image_size=48).preprocess.crop == 48
    pre = load_backbone("resnet18", "none", image_size=112).preprocess
    assert (pre.resize, pre.crop) == (128, 112)
    with pytest.raises(ConfigError, match="vit_b_32 only accepts 224x224"):
        load_backbone("vit_b_32", "none", image_size=64)
    with pytest.raises(ConfigError, match="inception_v3 needs inputs of at least 75"):
        load_backbone("inception_v3", "none", image_size=64)


def test_families_declare_their_missing_roles_with_reasons():
    for family in FAMILIES.values():
        for role, reason in family.missing:
            assert role in ("A", "A2", "B", "HEAD_IN", "HEAD_PRE") and len(reason) > 30
