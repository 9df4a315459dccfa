"""The Docker stack, end to end: build the image, start the compose stack (Label Studio + backend)
and check it through Label Studio's API, as a user would run it.

    .venv/bin/python -m benchmarks.container_test [--flavor cuda] [--image active-adaptation:cuda] [--no-build] [--keep]

Needs Docker with ``docker compose``; the base images ``python:3.11.7-slim-bookworm`` and
``heartexlabs/label-studio:1.23.2`` must be pullable (or already present). See docs/deployment.md,
"The stack test". Steps, each checked:

1. ``docker build --network host --build-arg FLAVOR=<flavor> -t <image> .`` (timed), tagged as the
   image compose runs for ``backend``;
2. ``docker compose up -d --no-build`` under its own compose project name and free host ports, with
   the default ``BACKBONE=efficientnet_lite0 WEIGHTS=DEFAULT`` (ImageNet weights inside the image: the
   containers download nothing) at ``IMAGE_SIZE=64 FREEZE=blocks.5`` (fast on a CPU);
3. both services healthy (Label Studio's /health, the backend container's HEALTHCHECK);
4. a project with an image-classification config and 20 tasks, connected to ``http://backend.internal:9090``;
   version 0 published for every task, the project's ``model_version`` switched to it and its queue
   to uncertainty sampling; the backend's webhook header set on the project's webhook;
5. a few annotations -> a new version (round t=1) published and switched to, with no other call;
6. ``docker restart`` of the backend -> the same version served and published, from the volume;
7. the backend runs as uid 10001 on a read-only root filesystem (a write outside its volumes
   /data and /opt/torch and the tmpfs /tmp fails);
8. ``docker compose down -v``.

With ``--replicas N``: N backend containers on one ``models`` volume (``--scale backend=N``, host ports
BACKEND_PORT=P-(P+N-1), as docs/deployment.md says); after the annotations exactly one round, and every replica
serves it.

Prints one line per check and a JSON summary; exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]

from ml_backend.demo.sample_data import digit_pngs
from ml_backend.demo.servers import classification_config

LABELS = [str(i) for i in range(10)]


def log(message: str) -> None:
    print(f"[container {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sh(*args: str, env=None, check: bool = True, timeout: float = 3600) -> str:
    result = subprocess.run(args, env=env, cwd=ROOT, text=True, capture_output=True, timeout=timeout)
    if check and result.returncode:
        raise RuntimeError(
            f"{' '.join(args)} -> {result.returncode}: {(result.stderr or result.stdout).strip()[-1500:]}"
        )
    return result.stdout.strip()


def daemon_answers() -> bool:
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait(what: str, probe, timeout: float, every: float = 2.0):
    started = time.monotonic()
    last = None
    while time.monotonic() - started < timeout:
        try:
            last = probe()
            if last:
                log(f"ok: {what} ({time.monotonic() - started:.0f} s)")
                return last
        except Exception as exc:  # a probe that fails is retried until the deadline
            last = exc
        time.sleep(every)
    raise TimeoutError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


def free_ports(n: int) -> int:
    """The first of ``n`` consecutive free local ports."""
    for _ in range(50):
        base = free_port()
        if base + n - 1 < 65536 and all(_free(base + i) for i in range(1, n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def replica_status(container: str, project: int) -> dict:
    """``/status`` of one replica for ``project``, asked inside its container (every replica, whatever
    host port it got)."""
    code = (
        "import json, urllib.request; print(json.dumps(json.load(urllib.request.urlopen("
        f"'http://127.0.0.1:9090/status', timeout=30))['projects'].get('{project}')))"
    )
    return json.loads(sh("docker", "exec", container, "python", "-c", code))


def check_replicas(ids: list[str], project: int, version: str, versions_in_ls, timeout: float) -> None:
    """Several replicas on one MODEL_DIR: the annotations gave exactly one round (one ``-t1-``
    version in Label Studio), and every replica serves it and names the same trainer."""

    def serving(i):  # a replica looks at MODEL_DIR at most every 2 s
        s = replica_status(i, project) or {}
        return s.get("model_version") == version and s.get("published_version") == version

    wait(
        f"every one of {len(ids)} replicas serves {version} and reports it published",
        lambda: all(map(serving, ids)),
        timeout,
    )
    statuses = [replica_status(i, project) for i in ids]
    rounds = sorted(v for v in versions_in_ls() if "-t1-" in v)
    assert rounds == [version], f"one round expected, Label Studio holds {rounds}"
    log(
        f"ok: {len(ids)} replicas on one MODEL_DIR: one round ({version}), served by all; trainer "
        f"{sorted({str(s.get('trainer')) for s in statuses})}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--flavor",
        default="cuda",
        choices=("cuda", "cpu"),
        help="image flavor to build (cpu needs download.pytorch.org to be reachable)",
    )
    parser.add_argument("--image", default=None, help="image tag (default: active-adaptation:<flavor>)")
    parser.add_argument("--no-build", action="store_true", help="use the image as it is")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for each wait")
    parser.add_argument("--keep", action="store_true", help="leave the stack running")
    parser.add_argument(
        "--replicas",
        type=int,
        default=1,
        help="backend replicas (docker compose --scale backend=N on a host port range, one MODEL_DIR volume)",
    )
    args = parser.parse_args(argv)
    image = args.image or f"active-adaptation:{args.flavor}"
    if not daemon_answers():
        print("no Docker daemon answers (`docker info` fails): nothing to test", file=sys.stderr)
        return 2

    results: dict = {"image": image}
    if not args.no_build:
        log(f"docker build --network host --build-arg FLAVOR={args.flavor} -t {image} .")
        started = time.monotonic()
        sh("docker", "build", "--network", "host", "--build-arg", f"FLAVOR={args.flavor}", "-t", image, ".")
        results["build_s"] = round(time.monotonic() - started)
        log(f"ok: image built in {results['build_s']} s")
    results["image_size_mb"] = round(int(sh("docker", "image", "inspect", "-f", "{{.Size}}", image)) / 1e6)

    project_name = f"aa-test-{secrets.token_hex(3)}"
    token = secrets.token_hex(20)
    ls_port, backend_port = free_port(), free_ports(args.replicas)
    port_spec = str(backend_port) if args.replicas == 1 else f"{backend_port}-{backend_port + args.replicas - 1}"
    env = {
        **os.environ,
        "COMPOSE_PROJECT_NAME": project_name,
        "LABEL_STUDIO_API_KEY": token,
        "LABEL_STUDIO_PASSWORD": secrets.token_urlsafe(12),
        "LABEL_STUDIO_PORT": str(ls_port),
        "BACKEND_PORT": port_spec,
        "LABEL_STUDIO_HOST": f"http://localhost:{ls_port}",
        # the default backbone with its packaged ImageNet weights (nothing is downloaded), small for a CPU
        "BACKBONE": "efficientnet_lite0",
        "WEIGHTS": "DEFAULT",
        "IMAGE_SIZE": "64",
        "FREEZE": "blocks.5",
        "TRAIN_STEPS": "20",
        "TRAIN_DEBOUNCE_S": "2",
    }
    compose = ["docker", "compose", "-p", project_name]
    sh("docker", "tag", image, f"{project_name}-backend")  # what compose runs for `backend` without building
    ok = False
    try:
        started = time.monotonic()
        log(
            f"docker compose -p {project_name} up -d --no-build --scale backend={args.replicas} "
            f"(Label Studio :{ls_port}, backend :{port_spec})"
        )
        sh(
            *compose,
            "up",
            "-d",
            "--no-build",
            "--scale",
            f"backend={args.replicas}",
            "label-studio",
            "backend",
            env=env,
        )
        ls_url, backend_url = f"http://127.0.0.1:{ls_port}", f"http://127.0.0.1:{backend_port}"
        api = requests.Session()
        api.headers["Authorization"] = f"Token {token}"

        def call(method, path, **kwargs):
            r = api.request(method, f"{ls_url}{path}", timeout=120, **kwargs)
            if r.status_code >= 400:
                raise RuntimeError(f"{method} {path} -> {r.status_code}: {r.text[:300]}")
            return r.json() if r.content else None

        wait(
            "Label Studio /health is UP",
            lambda: requests.get(f"{ls_url}/health", timeout=5).json()["status"] == "UP",
            args.timeout,
        )
        backend_ids = sh(*compose, "ps", "-q", "backend", env=env).split()
        assert len(backend_ids) == args.replicas, backend_ids
        backend_id = backend_ids[0]

        def healthy(ids=(backend_id,)):
            return all(sh("docker", "inspect", "-f", "{{.State.Health.Status}}", i) == "healthy" for i in ids)

        wait(
            f"{len(backend_ids)} backend container(s) healthy (HEALTHCHECK)",
            lambda: healthy(backend_ids),
            args.timeout,
            every=5,
        )
        results["healthy_after_s"] = round(time.monotonic() - started)
        wait("the legacy token is accepted", lambda: call("GET", "/api/current-user/whoami")["email"], 120)

        project = call(
            "POST", "/api/projects", json={"title": "container test", "label_config": classification_config(LABELS)}
        )["id"]
        digits = digit_pngs(20, size=32)
        tasks = [{"image": "data:image/png;base64," + base64.b64encode(png).decode()} for _, png, _ in digits]
        ids = call("POST", f"/api/projects/{project}/import", params={"return_task_ids": "true"}, json=tasks)[
            "task_ids"
        ]
        ml = call(
            "POST",
            "/api/ml",
            json={"project": project, "url": "http://backend.internal:9090", "title": "active-adaptation"},
        )
        assert ml["state"] == "CO", ml
        v0 = ml["model_version"]
        log(f"ok: project {project} with {len(ids)} tasks connected to http://backend.internal:9090 ({v0})")

        def project_info():
            return call("GET", f"/api/projects/{project}")

        def predictions_of(version):
            return [
                p
                for p in call("GET", "/api/predictions/", params={"project": project})
                if p["model_version"] == version
            ]

        wait(
            "version 0 published and the project switched to it",
            lambda: project_info()["model_version"] == v0 and len(predictions_of(v0)) == len(ids),
            args.timeout,
        )
        info = project_info()
        assert info["sampling"] == "Uncertainty sampling", info["sampling"]
        hooks = call("GET", "/api/webhooks/", params={"project": project})
        assert any("X-Active-Adaptation-Secret" in (h.get("headers") or {}) for h in hooks), hooks
        log("ok: uncertainty sampling on; the webhook carries the backend's secret header")

        for i, task in enumerate(ids[:4]):
            call(
                "POST",
                f"/api/tasks/{task}/annotations",
                json={
                    "result": [
                        {
                            "from_name": "label",
                            "to_name": "image",
                            "type": "choices",
                            "value": {"choices": [str(digits[i][2])]},
                        }
                    ]
                },
            )
        v1 = wait(
            "a trained version published after 4 annotations",
            lambda: (v := project_info()["model_version"]) != v0 and "-t1-" in v and v,
            args.timeout,
        )
        results["versions"] = [v0, v1]
        if args.replicas > 1:
            check_replicas(
                backend_ids,
                project,
                v1,
                lambda: {p["model_version"] for p in call("GET", "/api/predictions/", params={"project": project})},
                args.timeout,
            )
            results["replicas"] = args.replicas

        log("docker restart the backend")
        sh("docker", "restart", backend_id)
        wait("backend healthy again", healthy, args.timeout, every=3)
        status = requests.get(f"{backend_url}/status", timeout=30).json()["projects"][str(project)]
        assert status["model_version"] == v1 and status["published_version"] == v1, status
        assert project_info()["model_version"] == v1
        log(f"ok: after the restart the backend serves {v1} from the volume")

        uid = sh("docker", "exec", backend_id, "id", "-u")
        read_only = sh("docker", "inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", backend_id)
        write = subprocess.run(["docker", "exec", backend_id, "touch", "/app/x"], capture_output=True, text=True)
        data_write = subprocess.run(
            ["docker", "exec", backend_id, "touch", "/data/x", "/tmp/x", "/opt/torch/x"], capture_output=True
        )
        assert uid == "10001" and read_only == "true" and write.returncode != 0 and data_write.returncode == 0, (
            uid,
            read_only,
            write.stderr,
        )
        results.update(uid=uid, read_only_rootfs=True, write_outside_volume=write.stderr.strip())
        log("ok: uid 10001, read-only root filesystem (writes only to /data, /opt/torch and /tmp)")
        results["total_s"] = round(time.monotonic() - started)
        ok = True
    except Exception as exc:  # reported with the services' logs, then the stack is taken down
        results["error"] = f"{type(exc).__name__}: {exc}"
        for service in ("label-studio", "backend"):
            tail = subprocess.run([*compose, "logs", "--tail", "30", service], env=env, text=True, capture_output=True)
            print(f"--- last log lines of {service}:\n{tail.stdout}{tail.stderr}", file=sys.stderr)
    finally:
        if not args.keep:
            log("docker compose down -v")
            subprocess.run([*compose, "down", "-v"], env=env, capture_output=True, cwd=ROOT)
            subprocess.run(["docker", "rmi", f"{project_name}-backend"], capture_output=True)
    print(json.dumps(results, indent=2))
    print("CONTAINER TEST " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
