"""The Docker image and compose stack, for real (``python -m benchmarks.container_test``, in
benchmarks/container_test.py). Skipped, with the reason, where no Docker daemon answers (CI has none);
run it on a machine with one, see docs/deployment.md, "The stack test"."""

import subprocess

import pytest

from benchmarks import container_test

pytestmark = pytest.mark.docker


@pytest.mark.skipif(not container_test.daemon_answers(), reason="no Docker daemon answers (`docker info` fails)")
def test_the_compose_stack_builds_learns_and_survives_a_restart():
    image = "active-adaptation:cuda"
    present = subprocess.run(["docker", "image", "inspect", image], capture_output=True).returncode == 0
    assert container_test.main(["--image", image] + (["--no-build"] if present else [])) == 0
