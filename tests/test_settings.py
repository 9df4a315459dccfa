import re
from pathlib import Path

import pytest

from ml_backend.errors import ConfigError
from ml_backend.settings import ENV_VARS, Settings

ROOT = Path(__file__).resolve().parents[1]


def test_defaults():
    s = Settings.from_env({})
    assert (s.backbone, s.weights, s.strategy, s.device, s.log_level, s.port) == ("resnet18", "DEFAULT", "margin", "auto", "INFO", 9090)
    assert not s.basic_auth_enabled


@pytest.mark.parametrize("env, message", [
    ({"STRATEGY": "bogus"}, r"STRATEGY='bogus': unknown strategy 'bogus'; available: .*entropy.*margin.*random"),
    ({"STRATEGY": "adma:lam"}, r"STRATEGY='adma:lam': bad strategy option 'lam'"),
    ({"STRATEGY": "emoc:output=nope"}, r"STRATEGY='emoc:output=nope': bad parameters for strategy 'emoc'"),
    ({"QUEUE_DIVERSITY": "maybe"}, r"QUEUE_DIVERSITY='maybe' is invalid; allowed: off, coreset"),
    ({"BACKBONE": "resnet9000"}, r"BACKBONE='resnet9000' is unknown; allowed: alexnet, resnet18, smallcnn, vgg16"),
    ({"LOG_LEVEL": "chatty"}, r"LOG_LEVEL='CHATTY' is invalid; allowed: DEBUG, INFO"),
    ({"DEVICE": "tpu"}, r"DEVICE='tpu' is invalid; allowed: auto, cpu, cuda, cuda:N"),
    ({"PORT": "http"}, r"PORT='http' is not an integer"),
    ({"BATCH_SIZE": "0"}, r"BATCH_SIZE=0 must be >= 1"),
    ({"LABEL_STUDIO_URL": "label-studio:8080"}, r"LABEL_STUDIO_URL=.* must start with http"),
    ({"BASIC_AUTH_USER": "u"}, r"BASIC_AUTH_USER and BASIC_AUTH_PASS must be set together"),
])
def test_invalid_values_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_secrets_not_in_repr():
    s = Settings.from_env({"LABEL_STUDIO_API_KEY": "sekrit-token", "BASIC_AUTH_USER": "u", "BASIC_AUTH_PASS": "pw-sekrit"})
    assert "sekrit" not in repr(s)


def test_every_env_var_is_read_and_documented():
    source = (ROOT / "ml_backend" / "settings.py").read_text()
    read = set(re.findall(r'_(?:get|int|float|bool|choice)\(env, "([A-Z_]+)"', source))
    assert read == set(ENV_VARS), read ^ set(ENV_VARS)
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in ENV_VARS if f"`{name}`" not in readme]
    assert not missing, f"not documented in README.md: {missing}"
