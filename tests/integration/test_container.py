"""The Docker image and compose stack, for real (``python -m benchmarks.container_test``, in
benchmarks/container_test.py): secrets from files, nothing published beyond 127.0.0.1, Label Studio's
SSRF protection on (the backend connects, other private addresses are refused), learning, a restart,
and with two replicas one trainer. Skipped, with the reason, where no Docker daemon answers (CI has
none); run it on a machine with one, see docs/deployment.md, "The stack test"."""

import subprocess

import pytest

from benchmarks import container_test

pytestmark = pytest.mark.docker


@pytest.mark.skipif(not container_test.daemon_answers(), reason="no Docker daemon answers (`docker info` fails)")
@pytest.mark.parametrize("replicas", [1, 2])
def test_the_compose_stack_is_closed_by_default_learns_and_survives_a_restart(replicas):
    image = "active-adaptation:cuda"
    present = subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0
    args = ["--image", image, "--replicas", str(replicas)] + (["--no-build"] if present else [])
    assert container_test.main(args) == 0
