"""The Docker stack, end to end: build the image, start the compose stack (Label Studio + backend)
and check it through Label Studio's API, as a user would run it.

    .venv/bin/python -m benchmarks.container_test [--flavor cuda] [--image active-adaptation:cuda] [--no-build]
                                                  [--replicas N] [--keep]

Needs Docker with ``docker compose``; the base images ``python:3.11.7-slim-bookworm`` and
``heartexlabs/label-studio:1.23.2`` must be pullable (or already present). See docs/deployment.md,
"The stack test". Steps, each checked:

1. ``docker build --network host --build-arg FLAVOR=<flavor> -t <image> .`` (timed), tagged as the
   image compose runs for ``backend``;
2. the secrets are files (a fresh API token and password in a temporary folder, named by
   ``LABEL_STUDIO_API_KEY_FILE``/``LABEL_STUDIO_PASSWORD_FILE``); ``docker compose config`` shows
   neither value; started with an empty secret file, the backend and Label Studio each refuse to start
   with a message naming it;
3. ``docker compose -f docker-compose.yml up -d --no-build`` under its own compose project name (the
   checkout's .env and override files are not read), Label Studio on a free host port, with the default
   ``BACKBONE=efficientnet_lite0 WEIGHTS=DEFAULT`` (ImageNet weights inside the image: the containers
   download nothing) at ``IMAGE_SIZE=64 FREEZE=blocks.5`` (fast on a CPU);
4. both services healthy (Label Studio's /health, the backend container's HEALTHCHECK); what is
   exposed: Label Studio published on 127.0.0.1 only, the backend not published; neither secret in
   ``docker inspect`` of any container;
5. a project with an image-classification config and 20 tasks, connected to ``http://backend.internal:9090``
   with Label Studio's SSRF protection on; version 0 published for every task, the project's
   ``model_version`` switched to it and its queue to uncertainty sampling; the backend's webhook
   header set on the project's webhook;
6. Label Studio's SSRF protection, both sides: an import URL on a backend's address is fetched; on
   loopback, the host (the network's gateway), Label Studio's own address, the addresses just outside
   the backends' range and other private and link-local networks it is refused;
7. a few annotations -> a new version (round t=1) published and switched to, with no other call;
   with ``--replicas N`` (N backend containers on one ``models`` volume, ``--scale backend=N``):
   exactly one round in Label Studio, trained by exactly one replica (each replica's log), and every
   replica serves it;
8. ``docker restart`` of a backend (the one that trained) -> that same container, asked inside it,
   serves the same version and reports it published, from the volume;
9. the backend runs as uid 10001 on a read-only root filesystem (a write outside its volumes
   /data and /opt/torch and the tmpfs /tmp fails);
10. ``docker compose down -v``.

Prints one line per check and a JSON summary; exit status 0 when every check passed.
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[1]

from ml_backend.demo.sample_data import digit_pngs
from ml_backend.demo.servers import classification_config

LABELS = [str(i) for i in range(10)]
# variables of docker-compose.yml that the caller's environment must not change here: this test sets
# the ones it needs and checks the defaults of the others (127.0.0.1, no basic auth, no webhook secret)
COMPOSE_VARIABLES = frozenset(re.findall(r"\$\{([A-Z_]+)", (ROOT / "docker-compose.yml").read_text()))


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


def replica_status(container: str, project: int) -> dict:
    """``/status`` of one replica for ``project``, asked inside its container (the backend publishes no
    host port, and this names the exact replica)."""
    code = (
        "import json, urllib.request; print(json.dumps(json.load(urllib.request.urlopen("
        f"'http://127.0.0.1:9090/status', timeout=30))['projects'].get('{project}')))"
    )
    return json.loads(sh("docker", "exec", container, "python", "-c", code))


def inspect(container: str, template: str) -> str:
    return sh("docker", "inspect", "-f", template, container)


def rounds_trained(container: str, round_: int) -> int:
    """How many times this replica's log says it trained round ``round_`` (jobs/training.py's line
    "project <id>: round t=<n> trained on ...")."""
    logs = subprocess.run(["docker", "logs", container], capture_output=True, text=True, timeout=60)
    return len(re.findall(rf"project \S+: round t={round_} trained on ", logs.stdout + logs.stderr))


def check_replicas(ids: list[str], project: int, version: str, versions_in_ls, timeout: float) -> dict:
    """Several replicas on one MODEL_DIR: the annotations gave exactly one round (one ``-t1-``
    version in Label Studio), trained by exactly one replica (each replica's own log), and every
    replica serves it. Returns who trained."""

    def serving(i):  # a replica looks at MODEL_DIR at most every 2 s
        s = replica_status(i, project) or {}
        return s.get("model_version") == version and s.get("published_version") == version

    wait(
        f"every one of {len(ids)} replicas serves {version} and reports it published",
        lambda: all(map(serving, ids)),
        timeout,
    )
    rounds = sorted(v for v in versions_in_ls() if "-t1-" in v)
    assert rounds == [version], f"one round expected, Label Studio holds {rounds}"
    trained = {i: rounds_trained(i, 1) for i in ids}
    trainers = [i for i, n in trained.items() if n]
    assert len(trainers) == 1 and trained[trainers[0]] == 1, f"round t=1 trained per replica: {trained}"
    hosts = {i: inspect(i, "{{.Config.Hostname}}") for i in ids}
    last_job = {hosts[i]: (replica_status(i, project) or {}).get("process") for i in ids}
    log(
        f"ok: {len(ids)} replicas on one MODEL_DIR: one round ({version}), trained by {hosts[trainers[0]]} alone "
        f"(round t=1 in the logs: { ({hosts[i]: n for i, n in trained.items()}) }), served by all; "
        f"/status of each names the last job's process {last_job}"
    )
    return {"trainer": trainers[0], "trained_per_replica": {hosts[i]: n for i, n in trained.items()}}


def write_secret(folder: Path, name: str, value: str) -> Path:
    """A secret file as .env.example makes them: mode 0644 (the containers' users read it) in a
    folder only its owner enters."""
    path = folder / name
    path.write_text(value + "\n" if value else "")
    path.chmod(0o644)
    return path


def refuses_to_start(compose: list[str], env: dict, service: str, message: str) -> str:
    """``docker compose run`` of one service with an empty secret file: it must stop at start, with
    ``message`` in its output. Returns the line that says so."""
    result = subprocess.run(
        [*compose, "run", "--rm", "--no-deps", service], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    out = result.stdout + result.stderr
    assert result.returncode != 0 and message in out, (service, result.returncode, out[-2000:])
    return next(line.strip() for line in out.splitlines() if message in line)


def ssrf_checks(call, compose_network: dict, ls_port: int, backend_ips: list[str], ls_ip: str) -> dict:
    """Label Studio's SSRF protection, both sides, through its import-from-URL API in a throw-away
    project: a backend's address is fetched; every other address below is refused before any
    connection (Label Studio names the banned block)."""
    ip_range = ipaddress.ip_network(compose_network["ip_range"])
    gateway = compose_network["gateway"]
    below, above = ip_range.network_address - 1, ip_range.broadcast_address + 1
    allowed = ["http://backend.internal:9090/health", *(f"http://{ip}:9090/health" for ip in backend_ips)]
    refused = [
        "http://127.0.0.1:8080/tasks.json",  # loopback: Label Studio itself
        "http://localhost:8080/tasks.json",
        f"http://{gateway}:{ls_port}/tasks.json",  # the host, as the network's gateway
        f"http://{ls_ip}:8080/tasks.json",  # Label Studio's own address on the network
        f"http://{below}:9090/health",  # just outside the backends' range
        f"http://{above}:9090/health",
        "http://10.0.0.1/tasks.json",
        "http://192.168.1.1/tasks.json",
        "http://172.17.0.1/tasks.json",  # Docker's default bridge
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
    ]
    probe = call("POST", "/api/projects", json={"title": "ssrf probe", "label_config": classification_config(["a"])})[
        "id"
    ]
    out: dict = {"allowed": {}, "refused": {}}
    try:
        for url in allowed + refused:
            r = call("POST", f"/api/projects/{probe}/import", data={"url": url}, raw=True)
            block = re.search(r"reserved network address \(block: ([^)]+)\)", r.text)
            if url in allowed:  # fetched: the task it made links to the backend's /health answer
                assert r.status_code == 201 and not block, (url, r.status_code, r.text[:300])
                newest = max(call("GET", "/api/tasks/", params={"project": probe})["tasks"], key=lambda t: t["id"])
                (upload,) = newest["data"].values()
                answer = call("GET", upload, raw=True)
                assert answer.status_code == 200 and answer.json()["model_class"] == "ActiveAdaptation", answer.text
                out["allowed"][url] = (
                    f"{r.status_code}: fetched the backend's /health (instance {answer.json()['instance']})"
                )
            else:
                assert r.status_code == 400 and block, (url, r.status_code, r.text[:300])
                out["refused"][url] = block.group(1)
    finally:
        call("DELETE", f"/api/projects/{probe}")
    log(
        f"ok: SSRF protection on: {len(allowed)} import URL(s) on the backends' addresses fetched; "
        f"{len(refused)} refused: " + ", ".join(f"{u.split('/')[2]} ({b})" for u, b in out["refused"].items())
    )
    return out


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
        help="backend replicas (docker compose --scale backend=N, one MODEL_DIR volume)",
    )
    args = parser.parse_args(argv)
    image = args.image or f"active-adaptation:{args.flavor}"
    if not daemon_answers():
        print("no Docker daemon answers (`docker info` fails): nothing to test", file=sys.stderr)
        return 2

    results: dict = {"image": image, "replicas": args.replicas}
    if not args.no_build:
        log(f"docker build --network host --build-arg FLAVOR={args.flavor} -t {image} .")
        started = time.monotonic()
        sh("docker", "build", "--network", "host", "--build-arg", f"FLAVOR={args.flavor}", "-t", image, ".")
        results["build_s"] = round(time.monotonic() - started)
        log(f"ok: image built in {results['build_s']} s")
    results["image_size_mb"] = round(int(sh("docker", "image", "inspect", "-f", "{{.Size}}", image)) / 1e6)

    project_name = f"aa-test-{secrets.token_hex(3)}"
    token, password = secrets.token_hex(20), secrets.token_urlsafe(24)
    folder = Path(tempfile.mkdtemp(prefix="aa-secrets-"))  # mode 0700
    key_file = write_secret(folder, "label_studio_api_key", token)
    password_file = write_secret(folder, "label_studio_password", password)
    empty_file = write_secret(folder, "empty", "")
    env_file = folder / "empty.env"  # instead of the checkout's .env
    env_file.write_text("")
    ls_port = free_port()
    compose_file = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    (network,) = compose_file["networks"]["default"]["ipam"]["config"]
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES}
    env.update(
        COMPOSE_PROJECT_NAME=project_name,
        LABEL_STUDIO_API_KEY_FILE=str(key_file),
        LABEL_STUDIO_PASSWORD_FILE=str(password_file),
        LABEL_STUDIO_PORT=str(ls_port),
        LABEL_STUDIO_HOST=f"http://localhost:{ls_port}",
        # the default backbone with its packaged ImageNet weights (nothing is downloaded), small for a CPU
        BACKBONE="efficientnet_lite0",
        WEIGHTS="DEFAULT",
        IMAGE_SIZE="64",
        FREEZE="blocks.5",
        TRAIN_STEPS="20",
        TRAIN_DEBOUNCE_S="2",
    )
    compose = ["docker", "compose", "-f", "docker-compose.yml", "--env-file", str(env_file), "-p", project_name]
    sh("docker", "tag", image, f"{project_name}-backend")  # what compose runs for `backend` without building
    ok = False
    try:
        config = sh(*compose, "config", env=env)
        assert token not in config and password not in config and str(key_file) in config, "docker compose config"
        log("ok: `docker compose config` names the secret files, holds neither value")
        results["refused_empty_secret"] = {
            "backend": refuses_to_start(
                compose,
                {**env, "LABEL_STUDIO_API_KEY_FILE": str(empty_file)},
                "backend",
                "LABEL_STUDIO_API_KEY_FILE='/run/secrets/label_studio_api_key' is empty",
            ),
            "label-studio": refuses_to_start(
                compose,
                {**env, "LABEL_STUDIO_PASSWORD_FILE": str(empty_file)},
                "label-studio",
                "the secret label_studio_password (/run/secrets/label_studio_password) is missing or empty",
            ),
        }
        log(f"ok: with an empty secret file neither service starts: {results['refused_empty_secret']}")

        started = time.monotonic()
        log(
            f"docker compose -p {project_name} up -d --no-build --scale backend={args.replicas} "
            f"(Label Studio on 127.0.0.1:{ls_port}, the backend unpublished)"
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
        ls_url = f"http://127.0.0.1:{ls_port}"
        api = requests.Session()
        api.headers["Authorization"] = f"Token {token}"

        def call(method, path, raw=False, **kwargs):
            r = api.request(method, f"{ls_url}{path}", timeout=120, **kwargs)
            if raw:
                return r
            if r.status_code >= 400:
                raise RuntimeError(f"{method} {path} -> {r.status_code}: {r.text[:300]}")
            return r.json() if r.content else None

        wait(
            "Label Studio /health is UP",
            lambda: requests.get(f"{ls_url}/health", timeout=5).json()["status"] == "UP",
            args.timeout,
        )
        backend_ids = sh(*compose, "ps", "-q", "backend", env=env).split()
        ls_id = sh(*compose, "ps", "-q", "label-studio", env=env)
        assert len(backend_ids) == args.replicas, backend_ids

        def healthy(ids=tuple(backend_ids)):
            return all(inspect(i, "{{.State.Health.Status}}") == "healthy" for i in ids)

        wait(f"{len(backend_ids)} backend container(s) healthy (HEALTHCHECK)", healthy, args.timeout, every=5)
        results["healthy_after_s"] = round(time.monotonic() - started)

        # what is exposed: Label Studio on 127.0.0.1 only, the backend not at all; no secret in docker inspect
        ls_ports = json.loads(inspect(ls_id, "{{json .HostConfig.PortBindings}}"))
        assert ls_ports == {"8080/tcp": [{"HostIp": "127.0.0.1", "HostPort": str(ls_port)}]}, ls_ports
        for i in backend_ids:
            assert json.loads(inspect(i, "{{json .HostConfig.PortBindings}}")) in ({}, None), i
            assert sh("docker", "port", i) == "", i
        for i in [ls_id, *backend_ids]:
            text = sh("docker", "inspect", i)
            assert token not in text and password not in text, f"a secret in docker inspect {i}"
        results["published"] = {"label-studio": f"127.0.0.1:{ls_port}", "backend": None}
        log(
            f"ok: Label Studio published on 127.0.0.1:{ls_port} only, the backend not published; "
            "no secret in `docker inspect`"
        )
        wait(
            "the legacy token (from the secret file) is accepted",
            lambda: call("GET", "/api/current-user/whoami")["email"],
            120,
        )

        project = call(
            "POST", "/api/projects", json={"title": "container test", "label_config": classification_config(LABELS)}
        )["id"]
        digits = digit_pngs(20, size=32)
        tasks = [{"image": "data:image/png;base64," + base64.b64encode(png).decode()} for _, png, _ in digits]
        ids = call("POST", f"/api/projects/{project}/import", params={"return_task_ids": "true"}, json=tasks)[
            "task_ids"
        ]
        connected = time.monotonic()
        ml = call(
            "POST",
            "/api/ml",
            json={"project": project, "url": "http://backend.internal:9090", "title": "active-adaptation"},
        )
        assert ml["state"] == "CO", ml
        v0 = ml["model_version"]
        log(
            f"ok: project {project} with {len(ids)} tasks connected to http://backend.internal:9090 ({v0}), "
            "SSRF protection on"
        )

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
        results["v0_published_after_s"] = round(time.monotonic() - connected)
        info = project_info()
        assert info["sampling"] == "Uncertainty sampling", info["sampling"]
        hooks = call("GET", "/api/webhooks/", params={"project": project})
        assert any("X-Active-Adaptation-Secret" in (h.get("headers") or {}) for h in hooks), hooks
        log("ok: uncertainty sampling on; the webhook carries the backend's secret header")

        ips = {i: inspect(i, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}") for i in backend_ids}
        ls_ip = inspect(ls_id, "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}")
        assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(network["ip_range"]) for ip in ips.values()), ips
        results["ssrf"] = ssrf_checks(call, network, ls_port, sorted(ips.values()), ls_ip)

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
        annotated = time.monotonic()
        v1 = wait(
            "a trained version published after 4 annotations",
            lambda: (v := project_info()["model_version"]) != v0 and "-t1-" in v and v,
            args.timeout,
        )
        results["t1_published_after_s"] = round(time.monotonic() - annotated)
        results["versions"] = [v0, v1]
        target = backend_ids[0]
        if args.replicas > 1:
            who = check_replicas(
                backend_ids,
                project,
                v1,
                lambda: {p["model_version"] for p in call("GET", "/api/predictions/", params={"project": project})},
                args.timeout,
            )
            results["trained_per_replica"] = who["trained_per_replica"]
            target = who["trainer"]  # restart the replica that trained: its memory is lost, the volume not
        else:
            assert rounds_trained(target, 1) == 1, "the backend's log names no round t=1"

        host, before = inspect(target, "{{.Config.Hostname}}"), inspect(target, "{{.State.StartedAt}}")
        log(f"docker restart {host}")
        restarted = time.monotonic()
        sh("docker", "restart", target)
        wait(f"{host} healthy again", lambda: healthy((target,)), args.timeout, every=3)
        assert inspect(target, "{{.State.StartedAt}}") != before, "the container did not restart"
        status = wait(  # asked inside the restarted container itself
            f"{host} (restarted) serves {v1} and reports it published",
            lambda: (
                (s := replica_status(target, project) or {}).get("model_version") == v1
                and s.get("published_version") == v1
                and s
            ),
            args.timeout,
        )
        assert project_info()["model_version"] == v1
        results["restart_served_after_s"] = round(time.monotonic() - restarted)
        results["restarted"] = {"container": host, "model_version": status["model_version"]}
        log(f"ok: after the restart {host} itself serves {v1} from the volume")

        uid = sh("docker", "exec", target, "id", "-u")
        read_only = inspect(target, "{{.HostConfig.ReadonlyRootfs}}")
        write = subprocess.run(["docker", "exec", target, "touch", "/app/x"], capture_output=True, text=True)
        data_write = subprocess.run(
            ["docker", "exec", target, "touch", "/data/x", "/tmp/x", "/opt/torch/x"], capture_output=True
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
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(results, indent=2))
    print("CONTAINER TEST " + ("PASSED" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
