from pathlib import Path

import pytest

from ml_backend.errors import ConfigError
from ml_backend.service.settings import ENV_VARS, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_defaults():
    s = Settings.from_env({})
    assert (s.backbone, s.weights, s.strategy, s.device, s.log_level, s.port) == (
        "efficientnet_lite0",
        "DEFAULT",
        "auto",
        "auto",
        "INFO",
        9090,
    )
    assert not s.basic_auth_enabled


@pytest.mark.parametrize(
    "env, message",
    [
        ({"STRATEGY": "bogus"}, r"STRATEGY='bogus': unknown strategy 'bogus'; available: .*entropy.*margin.*random"),
        ({"STRATEGY": "adma:lam"}, r"STRATEGY='adma:lam': bad strategy option 'lam'"),
        ({"STRATEGY": "emoc:output=nope"}, r"STRATEGY='emoc:output=nope': bad parameters for strategy 'emoc'"),
        ({"QUEUE_DIVERSITY": "maybe"}, r"QUEUE_DIVERSITY='maybe' is invalid; allowed: off, coreset"),
        (
            {"BACKBONE": "resnet9000"},
            r"BACKBONE='resnet9000' is unknown; allowed: alexnet, convnext_base, .*, efficientnet_lite0, .*, "
            r"smallcnn, smallcnn-unfrozen, .*wide_resnet50_2 \(python -m ml_backend --list",
        ),
        ({"LOG_LEVEL": "chatty"}, r"LOG_LEVEL='CHATTY' is invalid; allowed: DEBUG, INFO"),
        ({"DEVICE": "tpu"}, r"DEVICE='tpu' is invalid; allowed: auto, cpu, cuda, cuda:N"),
        ({"PORT": "http"}, r"PORT='http' is not an integer"),
        ({"BATCH_SIZE": "0"}, r"BATCH_SIZE=0 must be >= 1"),
        ({"LABEL_STUDIO_URL": "label-studio:8080"}, r"LABEL_STUDIO_URL=.* must start with http"),
        ({"BASIC_AUTH_USER": "u"}, r"BASIC_AUTH_USER and BASIC_AUTH_PASS must be set together"),
    ],
)
def test_invalid_values_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_secrets_not_in_repr():
    s = Settings.from_env(
        {"LABEL_STUDIO_API_KEY": "sekrit-token", "BASIC_AUTH_USER": "u", "BASIC_AUTH_PASS": "pw-sekrit"}
    )
    assert "sekrit" not in repr(s)


def test_every_setting_is_declared_once_and_documented_by_the_generated_table():
    import dataclasses

    from ml_backend.service.settings import settings_table

    fields = dataclasses.fields(Settings)
    assert [f.name.upper() for f in fields] == list(ENV_VARS)
    assert all(callable(f.metadata["parse"]) and f.metadata["meaning"] for f in fields)
    for f in fields:  # every default is what parsing its own environment string gives
        default = ENV_VARS[f.name.upper()][0]
        if default:
            assert f.metadata["parse"](f.name.upper(), default) == f.default, f.name
    page = (ROOT / "docs" / "settings.md").read_text()
    assert settings_table() in page, "docs/settings.md's table is stale: python -m ml_backend --settings"
    env = {name: default for name, (default, _) in ENV_VARS.items()}
    assert Settings.from_env(env) == Settings.from_env({})
