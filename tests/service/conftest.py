"""Fixtures of the service tests: the Flask app with the real backend (small CNN) and its client."""

import pytest

from ml_backend.app import create_app
from tests.helpers import make_settings


@pytest.fixture
def app(tmp_path):
    app = create_app(make_settings(tmp_path))
    yield app
    app.extensions["backend"].close()


@pytest.fixture
def client(app):
    return app.test_client()
