import pytest
import torch
from torch import nn

from ml_backend.core.adapted import AdaptedModel
from ml_backend.core.architectures import available_backbones, get_backbone
from ml_backend.core.backbones import load_backbone, resolve_device
from ml_backend.errors import ConfigError, WeightsUnavailable
from strategies import Need

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    "name, frozen_params",
    [
        # docs/methods.md §1.2: first 2 weight layers (AlexNet), 7 (VGG-16), 8 incl. downsample (ResNet-18)
        ("alexnet", {"features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias"}),
        ("vgg16", {f"features.{i}.{p}" for i in (0, 2, 5, 7, 10, 12, 14) for p in ("weight", "bias")}),
        ("resnet18", None),
        ("smallcnn", {"features.0.weight", "features.0.bias"}),
    ],
)
def test_backbones_freeze_the_early_layers(name, frozen_params):
    base = load_backbone(name, "none")
    model = AdaptedModel(base, ["a", "b", "c"], CPU)
    frozen = {n for n, p in model.target.named_parameters() if not p.requires_grad}
    if frozen_params is not None:
        assert frozen == frozen_params
    else:
        convs = [n for n, m in model.target.named_modules() if isinstance(m, nn.Conv2d)]
        frozen_convs = [n for n in convs if f"{n}.weight" in frozen]
        assert frozen_convs == convs[:8] and frozen_convs[-1] == "layer2.0.downsample.0"
    assert model.head.out_features == 3
    assert model.trainable + sum(p.numel() for n, p in model.target.named_parameters() if n in frozen) == model.total
    # the source model keeps its source head
    assert base.model.get_submodule(base.spec.head).out_features == base.spec.source_classes


def test_frozen_batchnorm_stays_in_eval_mode():
    model = AdaptedModel(load_backbone("resnet18", "none"), ["a", "b"], CPU)
    model.train_mode()
    assert not model.target.bn1.training and not model.target.layer1[0].bn1.training
    assert model.target.layer3[0].bn1.training and model.target.fc.training
    x = torch.randn(4, 3, 64, 64)
    before = model.target.bn1.running_mean.clone()
    model.target(x)
    assert torch.equal(model.target.bn1.running_mean, before)


def test_forward_computes_declared_inputs_once():
    model = AdaptedModel(load_backbone("smallcnn", "none"), ["a", "b"], CPU)
    x = torch.randn(5, 3, 32, 32)
    out = model.forward(x, {Need.PROBS, Need.EMBEDDINGS, Need.FEATURES, Need.SOURCE_PROBS}, layers=("features.6",))
    assert out["probs"].shape == (5, 2) and torch.allclose(out["probs"].sum(1), torch.ones(5))
    assert out["embeddings"].shape == (5, 64)
    assert out["features"]["features.6"].shape == (5, 32, 4, 4)
    assert out["source_probs"].shape == (5, 10)
    torch.testing.assert_close(out["source_probs"], model.source(x).softmax(1))
    with pytest.raises(ValueError, match="inside the frozen trunk"):
        model.forward(x, {Need.FEATURES}, layers=("features.0",))


@pytest.mark.parametrize("name", ["resnet18", "vgg16", "alexnet", "smallcnn"])
def test_trunk_and_rest_compose_to_the_whole_model(name):
    base = load_backbone(name, "none")
    side = 32 if name == "smallcnn" else 224
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        torch.testing.assert_close(base.spec.rest(base.model, base.spec.trunk(base.model, x)), base.model(x))
    # the trunk holds exactly the frozen parameters
    model = AdaptedModel(base, ["a", "b"], CPU)
    trunk_params = set()
    hooks = [
        m.register_forward_hook(lambda mod, a, o: trunk_params.update(id(p) for p in mod.parameters(recurse=False)))
        for m in model.target.modules()
    ]
    with torch.no_grad():
        base.spec.trunk(model.target, x)
    for h in hooks:
        h.remove()
    frozen = {id(p) for p in model.target.parameters() if not p.requires_grad}
    assert trunk_params == frozen


def test_growing_labels_keeps_what_was_learned():
    model = AdaptedModel(load_backbone("smallcnn", "none"), ["cat", "dog"], CPU)
    x = torch.randn(6, 3, 32, 32)
    before = model.forward(x, {Need.LOGITS})["logits"]
    added = model.set_labels(["cat", "dog", "bird"])
    assert added == ["bird"] and model.head.out_features == 3
    after = model.forward(x, {Need.LOGITS})["logits"]
    torch.testing.assert_close(after[:, :2], before)
    # a removed label keeps its row but is no longer predicted
    model.set_labels(["dog", "bird"])
    assert model.labels == ["cat", "dog", "bird"] and model.active == ["dog", "bird"]
    torch.testing.assert_close(model.forward(x, {Need.LOGITS})["logits"][:, 0], before[:, 1])


def test_head_initialisation_is_seeded():
    a = AdaptedModel(load_backbone("smallcnn", "none", seed=1), ["a", "b"], CPU, seed=1)
    b = AdaptedModel(load_backbone("smallcnn", "none", seed=1), ["a", "b"], CPU, seed=1)
    for (_, p), (_, q) in zip(a.target.state_dict().items(), b.target.state_dict().items()):
        assert torch.equal(p, q)


def test_weights_name_is_loaded_through_torchvision_or_refused(monkeypatch, tmp_path):
    """Offline with an empty cache: a clear refusal, never silent random weights.
    The network is the part that cannot run here, so the download is made to fail."""
    import torchvision

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(self, *a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(WeightsUnavailable, match=r"cannot load ResNet18_Weights.IMAGENET1K_V1 .* WEIGHTS=none"):
        load_backbone("resnet18", "DEFAULT")
    with pytest.raises(ConfigError, match="not a weights name of resnet18; allowed: IMAGENET1K_V1, DEFAULT"):
        load_backbone("resnet18", "IMAGENET_FAKE")
    with pytest.raises(ConfigError, match="smallcnn' has no torchvision weights"):
        load_backbone("smallcnn", "DEFAULT")


def test_weights_from_torchvision_cache(monkeypatch, tmp_path):
    """The real loading path, fed from a state_dict that stands in for the downloaded file."""
    import torchvision

    reference = torchvision.models.alexnet(weights=None)
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", lambda self, **k: reference.state_dict())
    base = load_backbone("alexnet", "IMAGENET1K_V1")
    assert base.weights == "AlexNet_Weights.IMAGENET1K_V1" and len(base.source_categories) == 1000
    assert (base.preprocess.resize, base.preprocess.crop) == (256, 224)
    assert torch.equal(base.model.features[0].weight, reference.features[0].weight)


def test_torchvision_weights_of_other_families_load_as_torchvision_builds_them(monkeypatch):
    """GoogLeNet's file holds auxiliary heads (dropped) and needs its input transform; a SWAG ViT is
    built at its weights' own size (384 px), which IMAGE_SIZE then cannot change."""
    import torchvision

    googlenet = torchvision.models.googlenet(weights=None, aux_logits=True, init_weights=False)
    vit = torchvision.models.get_model("vit_b_16", weights=None, image_size=384)
    files = {"GoogLeNet_Weights": googlenet.state_dict(), "ViT_B_16_Weights": vit.state_dict()}
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", lambda self, **k: files[type(self).__name__])
    base = load_backbone("googlenet", "DEFAULT")
    assert base.model.transform_input and base.model.aux1 is None
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(base.spec.rest(base.model, base.spec.trunk(base.model, x)), base.model(x))
    swag = load_backbone("vit_b_16", "IMAGENET1K_SWAG_E2E_V1")
    assert swag.preprocess.crop == 384 and swag.model.image_size == 384
    with pytest.raises(ConfigError, match="vit_b_16 only accepts 384x384 inputs"):
        load_backbone("vit_b_16", "IMAGENET1K_SWAG_E2E_V1", image_size=224)


def test_weights_from_a_state_dict_file(tmp_path):
    source = load_backbone("smallcnn", "none", seed=5).model
    path = tmp_path / "mine.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    base = load_backbone("smallcnn", str(path))
    assert torch.equal(base.model.features[0].weight, source.features[0].weight)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailable, match="not a loadable state_dict"):
        load_backbone("smallcnn", str(tmp_path / "junk.pt"))
    with pytest.raises(WeightsUnavailable, match="no such file"):
        load_backbone("smallcnn", str(tmp_path / "absent.pt"))
    torch.save(load_backbone("resnet18", "none").model.state_dict(), tmp_path / "r18.pt")
    with pytest.raises(WeightsUnavailable, match="not a smallcnn state_dict"):
        load_backbone("smallcnn", str(tmp_path / "r18.pt"))


def test_device_resolution():
    assert resolve_device("cpu") == CPU
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda")


def test_registry():
    assert {"resnet18", "vgg16", "alexnet", "smallcnn"} <= set(available_backbones())
    with pytest.raises(ConfigError, match="allowed"):
        get_backbone("nope")


# docs/methods.md §1.2: ADMA's layer hooks per torchvision model (224 px), post-activation and cloned
ROLE_SHAPES = {
    "resnet18": {"A": (512, 7, 7), "B": (512, 1, 1), "A2": (512, 7, 7)},
    "vgg16": {"A": (512, 7, 7), "B": (4096,), "A2": (512, 14, 14), "HEAD_IN": (4096,), "HEAD_PRE": (4096,)},
    "alexnet": {"A": (256, 6, 6), "B": (4096,), "A2": (256, 13, 13), "HEAD_IN": (4096,), "HEAD_PRE": (4096,)},
}


@pytest.mark.parametrize("name", sorted(ROLE_SHAPES))
def test_adma_layer_roles_hook_post_activation_tensors(name):
    model = AdaptedModel(load_backbone(name, "none"), ["a", "b"], CPU)
    roles = tuple(ROLE_SHAPES[name])
    x = torch.randn(2, 3, 224, 224)
    out = model.forward(x, {Need.FEATURES, Need.SOURCE_FEATURES, Need.EMBEDDINGS}, roles)
    for role, shape in ROLE_SHAPES[name].items():
        assert out["features"][role].shape == (2, *shape), role
        assert out["source_features"][role].shape == (2, *shape), role
    for role in ("A", "B", "A2"):  # after ReLU (in-place ReLUs did not alias the stored tensor)
        assert out["features"][role].min() >= 0, role
    if "HEAD_PRE" in roles:
        assert out["features"]["HEAD_PRE"].min() < 0  # the pre-activation was cloned before the in-place ReLU
        torch.testing.assert_close(out["features"]["HEAD_PRE"].relu(), out["embeddings"])
    torch.testing.assert_close(out["features"]["B"].flatten(1), out["embeddings"]) if name == "resnet18" else None


def test_roles_a_backbone_lacks_are_refused():
    model = AdaptedModel(load_backbone("smallcnn", "none"), ["a"], CPU)
    with pytest.raises(ValueError, match="needs layer role A2, which smallcnn does not declare: conv1"):
        model.forward(torch.randn(1, 3, 32, 32), {Need.FEATURES}, ("A2",))
    resnet = AdaptedModel(load_backbone("resnet18", "none"), ["a"], CPU)
    with pytest.raises(ValueError, match="needs layer role HEAD_IN, which resnet18 does not declare: EMOC's two-layer"):
        resnet.forward(torch.randn(1, 3, 64, 64), {Need.FEATURES}, ("HEAD_IN",))
