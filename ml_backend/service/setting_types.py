"""How a setting is declared, parsed and checked: the parsers of environment variables (each
takes the variable's name and raw text and returns the value or raises a ConfigError naming the
variable), :func:`setting` (a field of :class:`~ml_backend.service.settings.Settings`) and the
``<NAME>_FILE`` form of secret settings."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from ml_backend.errors import ConfigError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
DEVICES = ("auto", "cpu", "cuda")
Parser = Callable[[str, str], Any]  # (variable name, raw value) -> value


def text(name: str, raw: str) -> str:
    return raw


def integer(minimum: int) -> Parser:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not an integer") from None
        if value < minimum:
            raise ConfigError(f"{name}={value} must be >= {minimum}")
        return value

    return parse


def number(minimum: float, inclusive: bool = False, maximum: float | None = None) -> Parser:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        if not (value >= minimum if inclusive else value > minimum) or (maximum is not None and value > maximum):
            bound = f"{'>=' if inclusive else '>'} {minimum}" + (f" and <= {maximum}" if maximum is not None else "")
            raise ConfigError(f"{name}={value} must be {bound}")
        return value

    return parse


def flag(name: str, raw: str) -> bool:
    low = raw.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={low!r} is invalid; allowed: true, false")


def choice(*allowed: str) -> Parser:
    def parse(name: str, raw: str) -> str:
        low = raw.lower()
        if low not in allowed:
            raise ConfigError(f"{name}={low!r} is invalid; allowed: {', '.join(allowed)}")
        return low

    return parse


def url(name: str, raw: str) -> str:
    value = raw.rstrip("/")
    if value and urlsplit(value).scheme not in ("http", "https"):
        raise ConfigError(f"{name}={value!r} must start with http:// or https://")
    return value


def log_level(name: str, raw: str) -> str:
    level = raw.upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"{name}={level!r} is invalid; allowed: {', '.join(LOG_LEVELS)}")
    return level


def backbone(name: str, raw: str) -> str:
    from ml_backend.core.architectures import available_backbones, refused_backbones  # cheap settings, lazy torch

    value = raw.lower()
    refused = refused_backbones()
    if value in refused:
        raise ConfigError(f"{name}={value} is not supported: {refused[value]}")
    if value not in available_backbones():
        raise ConfigError(
            f"{name}={value!r} is unknown; allowed: {', '.join(available_backbones())} "
            "(python -m ml_backend --list shows what each supports)"
        )
    return value


def freeze(name: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ConfigError(f"{name} is empty; use default, none, all, a fraction such as 0.5, or a module name")
    try:
        fraction = float(value)
    except ValueError:
        return value  # a module name: checked against the backbone's stages when it is built
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"{name}={value}: a fraction of the stages must lie in [0, 1]")
    return value


def strategy(name: str, raw: str) -> str:
    import strategies

    try:
        strategies.from_spec(raw)
    except strategies.StrategyError as exc:
        raise ConfigError(f"{name}={raw!r}: {exc}") from None
    return raw


def device(name: str, raw: str) -> str:
    value = raw.lower()
    if value not in DEVICES and not (value.startswith("cuda:") and value[5:].isdigit()):
        raise ConfigError(f"{name}={value!r} is invalid; allowed: auto, cpu, cuda, cuda:N")
    return value


def path(name: str, raw: str) -> Path:
    return Path(raw)


def setting(default: Any, meaning: str, parse: Parser = text, secret: bool = False) -> Any:
    """A field of :class:`Settings`: its environment variable is the field's name in upper case; a
    ``secret`` one is left out of the repr and may be read from a file named by ``<NAME>_FILE``."""
    return dataclasses.field(
        default=default, repr=not secret, metadata={"meaning": meaning, "parse": parse, "secret": secret}
    )


FILE_SUFFIX = "_FILE"


def read_secret_file(name: str, file_var: str, path: str) -> str:
    """The value of secret ``name`` from the file ``path`` (named by ``file_var``): its text without
    surrounding whitespace (the trailing newline ``echo`` or an editor leaves). A missing,
    unreadable or empty file is a ConfigError naming the variable."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise ConfigError(f"{file_var}={path!r}: no such file (it should hold {name})") from None
    except IsADirectoryError:
        raise ConfigError(f"{file_var}={path!r} is a directory, not a file holding {name}") from None
    except OSError as exc:
        raise ConfigError(f"{file_var}={path!r} cannot be read: {exc.strerror or exc}") from None
    try:
        value = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{file_var}={path!r} is not UTF-8 text") from None
    if not value:
        raise ConfigError(f"{file_var}={path!r} is empty: it should hold {name}")
    return value


def shown(value: Any) -> str:
    """A default as it would be written in the environment."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)
