"""The README's first command, for real: the demo on a busy port, run twice, stopped with Ctrl-C."""

import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest
import requests

from ml_backend.demo.sample_data import fashion_available
from ml_backend.demo.servers import ADMIN_TOKEN, ROOT, free_port

pytestmark = pytest.mark.labelstudio


def start_demo(tmp_path, port, backend_port, images=40):
    process = subprocess.Popen(
        [
            "bash",
            "scripts/demo.sh",
            "--dir",
            str(tmp_path / "demo"),
            "--port",
            str(port),
            "--backend-port",
            str(backend_port),
            "--images",
            str(images),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    lines: list[str] = []
    ready: dict = {}

    def reader():
        for line in process.stdout:
            lines.append(line)
            if line.startswith("DEMO READY "):
                ready.update(json.loads(line[len("DEMO READY ") :]))

    threading.Thread(target=reader, daemon=True).start()
    deadline = time.monotonic() + 600
    while not ready and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
    if not ready:
        process.kill()
        pytest.fail("the demo did not report ready:\n" + "".join(lines[-40:]))
    return process, ready, lines


def stop_demo(process, ready):
    process.send_signal(signal.SIGINT)  # what Ctrl-C sends
    assert process.wait(timeout=60) == 0
    for pid in ready["pids"]:
        with pytest.raises(ProcessLookupError):
            os.killpg(pid, 0)  # no process of the demo's servers is left


def check_queue(ready):
    api = requests.Session()
    api.headers["Authorization"] = f"Token {ADMIN_TOKEN}"
    base, project = ready["label_studio"], ready["project"]
    info = api.get(f"{base}/api/projects/{project}", timeout=10).json()
    assert info["model_version"] == ready["model_version"] and info["sampling"] == "Uncertainty sampling"
    if fashion_available():  # real photos when Debian's dataset-fashion-mnist is installed (setup_env.sh)
        assert info["title"] == "Active Adaptation demo: Fashion-MNIST" and 'value="Ankle boot"' in info["label_config"]
    predictions = api.get(f"{base}/api/predictions/", params={"project": project}, timeout=30).json()
    score = {p["task"]: p["score"] for p in predictions if p["model_version"] == info["model_version"]}
    assert len(score) == info["task_number"]  # every task has a prediction of the published version
    served = []
    for _ in range(8):
        task = api.get(f"{base}/api/projects/{project}/next", timeout=30).json()
        served.append(score[task["id"]])
        api.post(f"{base}/api/tasks/{task['id']}/annotations", json={"result": [], "was_cancelled": True}, timeout=30)
    assert served == sorted(served) and served[0] == min(score.values())
    return project


def test_demo_runs_twice_on_a_busy_port_and_stops_cleanly(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    busy_port = busy.getsockname()[1]
    try:
        process, ready, lines = start_demo(tmp_path, busy_port, free_port())
        try:
            assert any(f"port {busy_port} is busy" in line for line in lines)
            assert f":{busy_port}" not in ready["label_studio"]
            first_project = check_queue(ready)
        finally:
            stop_demo(process, ready)
    finally:
        busy.close()

    # again, on the same directory: the project, its tasks and the model are reused
    process, ready, lines = start_demo(tmp_path, free_port(), free_port())
    try:
        assert ready["project"] == first_project
        assert any("reusing project" in line for line in lines)
        api = requests.Session()
        api.headers["Authorization"] = f"Token {ADMIN_TOKEN}"
        assert api.get(f"{ready['label_studio']}/api/projects/{first_project}", timeout=10).json()["task_number"] == 40
        hooks = api.get(f"{ready['label_studio']}/api/webhooks/", params={"project": first_project}, timeout=10).json()
        assert [h["url"] for h in hooks] == [ready["backend"] + "/webhook"]  # events reach the new port
    finally:
        stop_demo(process, ready)
