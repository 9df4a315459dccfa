import os
from pathlib import Path

import pytest

from ml_backend.errors import ConfigError
from ml_backend.service.settings import ENV_VARS, Settings

SECRETS = ("LABEL_STUDIO_API_KEY", "BASIC_AUTH_PASS", "WEBHOOK_SECRET")

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
        ({"BATCH_SIZE": "-1"}, r"BATCH_SIZE=-1 must be >= 0"),
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
    names = [f.name.upper() for f in fields]
    assert [n for n in ENV_VARS if not n.endswith("_FILE")] == names
    assert [n for n in ENV_VARS if n.endswith("_FILE")] == [f"{n}_FILE" for n in SECRETS]
    assert [f.name.upper() for f in fields if f.metadata["secret"]] == list(SECRETS)
    assert all(callable(f.metadata["parse"]) and f.metadata["meaning"] for f in fields)
    for f in fields:  # every default is what parsing its own environment string gives
        default = ENV_VARS[f.name.upper()][0]
        if default:
            assert f.metadata["parse"](f.name.upper(), default) == f.default, f.name
    page = (ROOT / "docs" / "settings.md").read_text()
    assert settings_table() in page, "docs/settings.md's table is stale: python -m ml_backend --settings"
    env = {name: default for name, (default, _) in ENV_VARS.items()}
    assert Settings.from_env(env) == Settings.from_env({})


def _secret_file(tmp_path, name, content: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


@pytest.mark.parametrize("name", SECRETS)
def test_every_secret_is_read_from_its_file_without_the_trailing_newline(tmp_path, name):
    env = {f"{name}_FILE": _secret_file(tmp_path, "secret", b"s3cr3t-value\n")}
    if name == "BASIC_AUTH_PASS":
        env["BASIC_AUTH_USER"] = "annotator"
    s = Settings.from_env(env)
    assert getattr(s, name.lower()) == "s3cr3t-value"
    assert "s3cr3t" not in repr(s)


def test_a_secret_file_keeps_inner_spaces_and_drops_a_windows_line_end(tmp_path):
    path = _secret_file(tmp_path, "key", b"  pass phrase with spaces\r\n")
    assert Settings.from_env({"LABEL_STUDIO_API_KEY_FILE": path}).label_studio_api_key == "pass phrase with spaces"


def test_an_empty_file_variable_is_unset_and_the_plain_variable_still_works():
    env = {"LABEL_STUDIO_API_KEY": "tok", "LABEL_STUDIO_API_KEY_FILE": "", "WEBHOOK_SECRET_FILE": "  "}
    s = Settings.from_env(env)
    assert (s.label_studio_api_key, s.webhook_secret) == ("tok", "")


@pytest.mark.parametrize("name", SECRETS)
def test_setting_both_a_secret_and_its_file_is_an_error(tmp_path, name):
    env = {name: "inline", f"{name}_FILE": _secret_file(tmp_path, "secret", b"from-file")}
    with pytest.raises(ConfigError, match=rf"^{name} and {name}_FILE are both set: set one of them$"):
        Settings.from_env(env)


def test_a_missing_secret_file_names_the_variable_and_the_path(tmp_path):
    path = str(tmp_path / "nope")
    with pytest.raises(
        ConfigError,
        match=rf"^LABEL_STUDIO_API_KEY_FILE='{path}': no such file \(it should hold LABEL_STUDIO_API_KEY\)$",
    ):
        Settings.from_env({"LABEL_STUDIO_API_KEY_FILE": path})


@pytest.mark.parametrize("content", [b"", b"\n", b"  \r\n"])
def test_an_empty_secret_file_is_an_error(tmp_path, content):
    path = _secret_file(tmp_path, "empty", content)
    with pytest.raises(ConfigError, match=r"^WEBHOOK_SECRET_FILE='.*/empty' is empty: it should hold WEBHOOK_SECRET$"):
        Settings.from_env({"WEBHOOK_SECRET_FILE": path})


def _error_as_nobody(env) -> str:
    """Settings.from_env(env)'s ConfigError message, in a forked child that runs as uid/gid 65534:
    root reads any file, so a root test run checks the unreadable file as an unprivileged user."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.setgid(65534)
            os.setuid(65534)
            Settings.from_env(env)
            message = "no error"
        except ConfigError as exc:
            message = str(exc)
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            message = f"{type(exc).__name__}: {exc}"
        os.write(write, message.encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as f:
        message = f.read()
    os.waitpid(pid, 0)
    return message


def test_an_unreadable_secret_file_is_an_error(tmp_path):
    path = _secret_file(tmp_path, "locked", b"value")
    os.chmod(path, 0)
    env = {"BASIC_AUTH_USER": "u", "BASIC_AUTH_PASS_FILE": path}
    if os.geteuid() == 0:
        message = _error_as_nobody(env)
    else:
        with pytest.raises(ConfigError) as caught:
            Settings.from_env(env)
        message = str(caught.value)
    assert message == f"BASIC_AUTH_PASS_FILE={path!r} cannot be read: Permission denied"


def test_a_directory_or_binary_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"^LABEL_STUDIO_API_KEY_FILE='.*' is a directory, not a file holding"):
        Settings.from_env({"LABEL_STUDIO_API_KEY_FILE": str(tmp_path)})
    path = _secret_file(tmp_path, "binary", b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match=r"^LABEL_STUDIO_API_KEY_FILE='.*/binary' is not UTF-8 text$"):
        Settings.from_env({"LABEL_STUDIO_API_KEY_FILE": path})


def test_a_secret_file_error_stops_the_server_at_start_with_the_message(tmp_path):
    """What the container's start-up prints (``python -m ml_backend`` and the gunicorn entry point
    share Settings.from_env): exit status 2 and one line naming the variable, no traceback."""
    import subprocess
    import sys

    env = {**os.environ, "LABEL_STUDIO_API_KEY_FILE": str(tmp_path / "missing"), "PYTHONPATH": str(ROOT)}
    env.pop("LABEL_STUDIO_API_KEY", None)
    result = subprocess.run(
        [sys.executable, "-m", "ml_backend", "--check"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result
    assert result.stderr.strip().splitlines()[-1] == (
        f"configuration error: LABEL_STUDIO_API_KEY_FILE='{tmp_path / 'missing'}': no such file "
        "(it should hold LABEL_STUDIO_API_KEY)"
    )
    assert "Traceback" not in result.stderr
