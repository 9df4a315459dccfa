"""Typed errors with messages meant for the user who has to fix something."""


class BackendError(Exception):
    """Base class. ``status`` is the HTTP status the API answers with."""

    status = 500


class ConfigError(BackendError):
    """A setting (environment variable) is missing or invalid. Raised at start-up."""


class BadRequest(BackendError):
    status = 400


class LabelConfigError(BadRequest):
    """The project's label config is not one this backend supports."""

    status = 422


class UnknownProject(BadRequest):
    status = 404


class Unavailable(BackendError):
    """Something the request depends on (Label Studio) cannot be reached now."""

    status = 503


class DiskFull(OSError):
    """MODEL_DIR's filesystem has no room for a new version: nothing of it was written, the last
    complete version keeps serving, and the round is retried (it succeeds once space returns)."""


class WeightsUnavailable(ConfigError):
    """Requested pretrained weights cannot be loaded (e.g. offline with an empty cache)."""


class ImageError(Exception):
    """One task's image could not be used. Never fails a batch: the task is skipped."""
