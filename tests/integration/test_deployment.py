"""Deployment files, without a Docker engine (CI has none; tests/integration/test_container.py builds and runs the
stack where one answers): lint the Dockerfile and check that the image, compose file and docs use only
settings that exist and the same install steps as CI."""

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ml_backend.demo.servers import LABEL_STUDIO_FLAGS
from ml_backend.service.settings import ENV_VARS

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
# Label Studio's own settings used by the compose file (LABEL_STUDIO.md §2); the admin's password and
# token (LABEL_STUDIO_PASSWORD, LABEL_STUDIO_USER_TOKEN) are read from the secret files by its command
LABEL_STUDIO_VARS = {
    "LABEL_STUDIO_USERNAME",
    "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN",
    "LABEL_STUDIO_ML_BLOCK_LOCAL_IP",
    "LABEL_STUDIO_SSRF_PROTECTION_ENABLED",
    "LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS",
    "LABEL_STUDIO_USER_ADDITIONAL_BANNED_SUBNETS",
    "LABEL_STUDIO_HOST",
    *LABEL_STUDIO_FLAGS,  # its own feature flags that the demo's Label Studio runs with too
}
# compose-only knobs (.env.example): host port and interface, the password's file, the image flavor
COMPOSE_VARS = {"LABEL_STUDIO_PORT", "LABEL_STUDIO_BIND", "LABEL_STUDIO_PASSWORD_FILE", "FLAVOR"}
SECRET_SETTINGS = ("LABEL_STUDIO_API_KEY", "BASIC_AUTH_PASS", "WEBHOOK_SECRET")
# Label Studio 1.23's default banned subnets (validate_ip in label_studio/core/utils/io.py), checked
# against its source below where its venv exists
LABEL_STUDIO_DEFAULT_BANNED = (
    "0.0.0.0/8 10.0.0.0/8 100.64.0.0/10 127.0.0.0/8 169.254.0.0/16 172.16.0.0/12 192.0.0.0/24 192.0.2.0/24 "
    "192.88.99.0/24 192.168.0.0/16 198.18.0.0/15 198.51.100.0/24 203.0.113.0/24 224.0.0.0/4 233.252.0.0/24 "
    "240.0.0.0/4 255.255.255.255/32 ::/128 ::1/128 ::ffff:0:0/96 ::ffff:0:0:0/96 64:ff9b::/96 64:ff9b:1::/48 "
    "100::/64 2001:0000::/32 2001:20::/28 2001:db8::/32 2002::/16 fc00::/7 fe80::/10 ff00::/8"
).split()
LABEL_STUDIO_IO = ROOT / ".cache/ls-venv/lib/python3.11/site-packages/label_studio/core/utils/io.py"
RUNTIME_VARS = {
    "PYTHONPATH",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONUNBUFFERED",
    "PIP_NO_CACHE_DIR",
    "PIP_DISABLE_PIP_VERSION_CHECK",
    "TORCH_HOME",
}


def test_hadolint_passes():
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    result = subprocess.run([hadolint, "Dockerfile"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_sets_only_known_variables():
    env_block = re.search(r"^ENV (.*?)(?=^\S)", DOCKERFILE, re.S | re.M).group(1)
    names = set(re.findall(r"([A-Z_][A-Z0-9_]*)=", env_block))
    assert names - RUNTIME_VARS <= set(ENV_VARS), names - RUNTIME_VARS - set(ENV_VARS)
    build_args = set(re.findall(r"^ARG ([A-Z_]+)", DOCKERFILE, re.M))
    assert build_args == {"PYTHON_IMAGE", "FLAVOR", "BAKE_WEIGHTS", "BACKBONE", "WEIGHTS"}
    start = (ROOT / "scripts" / "docker-start.sh").read_text()
    assert set(re.findall(r"\$\{([A-Z_]+)", start)) <= set(ENV_VARS)
    assert "exec gunicorn" in start and "--threads" in start


def test_compose_references_only_existing_variables():
    services = COMPOSE["services"]
    for name in ("backend", "backend-gpu"):
        env = services[name]["environment"]
        assert set(env) <= set(ENV_VARS), set(env) - set(ENV_VARS)
        assert env["LABEL_STUDIO_URL"] == "http://label-studio:8080"
    assert services["backend-gpu"]["environment"]["DEVICE"] == "cuda"
    assert services["backend-gpu"]["profiles"] == ["gpu"]
    ls = services["label-studio"]
    assert ls["image"] == "heartexlabs/label-studio:1.23.2"
    assert set(ls["environment"]) <= LABEL_STUDIO_VARS
    assert {k: ls["environment"][k] for k in LABEL_STUDIO_FLAGS} == LABEL_STUDIO_FLAGS  # the same as the demo's
    text = (ROOT / "docker-compose.yml").read_text()
    for var in set(re.findall(r"\$\{([A-Z_]+)", text)):
        assert var in ENV_VARS or var in LABEL_STUDIO_VARS or var in COMPOSE_VARS, var
    assert (
        services["backend"]["volumes"] == services["backend-gpu"]["volumes"] == ["models:/data", "torch-hub:/opt/torch"]
    )


def test_compose_has_no_default_secret_and_refuses_to_start_without_one():
    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text and "change-me" not in (ROOT / ".env.example").read_text()
    secrets = COMPOSE["secrets"]
    assert set(secrets) == {"label_studio_api_key", "label_studio_password", "basic_auth_pass", "webhook_secret"}
    for name in ("label_studio_api_key", "label_studio_password"):  # required: ${VAR:?message}, no default
        assert re.fullmatch(
            rf"\$\{{{name.upper()}_FILE:\?set {name.upper()}_FILE to a file holding .+\}}", secrets[name]["file"]
        )
    for name in ("basic_auth_pass", "webhook_secret"):  # optional: an empty stand-in that nothing reads
        assert secrets[name]["file"] == f"${{{name.upper()}_FILE:-/dev/null}}"


def test_no_secret_value_is_in_any_containers_environment():
    """Every secret reaches the containers as a file under /run/secrets: the backend reads <NAME>_FILE,
    Label Studio's command reads the files into its own process's environment only."""
    services = COMPOSE["services"]
    for name in ("backend", "backend-gpu"):
        service = services[name]
        env = service["environment"]
        assert not set(env) & set(SECRET_SETTINGS), set(env) & set(SECRET_SETTINGS)
        assert env["LABEL_STUDIO_API_KEY_FILE"] == "/run/secrets/label_studio_api_key"
        assert env["BASIC_AUTH_PASS_FILE"] == "${BASIC_AUTH_PASS_FILE:+/run/secrets/basic_auth_pass}"
        assert env["WEBHOOK_SECRET_FILE"] == "${WEBHOOK_SECRET_FILE:+/run/secrets/webhook_secret}"
        assert service["secrets"] == ["label_studio_api_key", "basic_auth_pass", "webhook_secret"]
    ls = services["label-studio"]
    assert not {"LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN"} & set(ls["environment"])
    assert ls["secrets"] == ["label_studio_api_key", "label_studio_password"]
    command = ls["command"][2]
    assert ls["command"][:2] == ["/bin/sh", "-c"] and command.rstrip().endswith("exec label-studio")
    assert "secret label_studio_password; LABEL_STUDIO_PASSWORD=$$value" in command
    assert "secret label_studio_api_key; LABEL_STUDIO_USER_TOKEN=$$value" in command


def test_nothing_is_published_beyond_this_machine_by_default():
    services = COMPOSE["services"]
    assert services["label-studio"]["ports"] == ["${LABEL_STUDIO_BIND:-127.0.0.1}:${LABEL_STUDIO_PORT:-8080}:8080"]
    for name in ("backend", "backend-gpu"):  # reached by Label Studio on the compose network only
        assert "ports" not in services[name], name
    example = (ROOT / ".env.example").read_text()
    assert "LABEL_STUDIO_BIND=127.0.0.1" in example.splitlines()


def _banned_after_compose():
    import ipaddress

    env = COMPOSE["services"]["label-studio"]["environment"]
    assert env["LABEL_STUDIO_SSRF_PROTECTION_ENABLED"] == env["LABEL_STUDIO_ML_BLOCK_LOCAL_IP"] == "true"
    assert env["LABEL_STUDIO_USE_DEFAULT_BANNED_SUBNETS"] == "false"  # replaced by the list below
    return [ipaddress.ip_network(n) for n in env["LABEL_STUDIO_USER_ADDITIONAL_BANNED_SUBNETS"].split(",")]


def test_ssrf_protection_stays_on_and_allows_exactly_the_backends_addresses():
    """Label Studio's own default banned list, with one hole: the ip_range from which Docker gives the
    backends their addresses. Label Studio's fixed address and the gateway (the host) stay banned."""
    import ipaddress

    banned = _banned_after_compose()
    (network,) = COMPOSE["networks"]["default"]["ipam"]["config"]
    subnet, allowed = ipaddress.ip_network(network["subnet"]), ipaddress.ip_network(network["ip_range"])
    assert allowed.subnet_of(subnet)
    default = [ipaddress.ip_network(n) for n in LABEL_STUDIO_DEFAULT_BANNED]
    expected = []
    for net in default:
        inside = net.version == allowed.version and allowed.subnet_of(net)
        expected += sorted(net.address_exclude(allowed)) if inside else [net]
    assert banned == expected

    def is_banned(address):
        ip = ipaddress.ip_address(address)
        return any(ip in net for net in banned)

    assert not any(is_banned(ip) for ip in allowed)
    assert all(is_banned(ip) for ip in subnet if ip not in allowed)
    ls_address = COMPOSE["services"]["label-studio"]["networks"]["default"]["ipv4_address"]
    assert is_banned(ls_address) and is_banned(network["gateway"]) and ipaddress.ip_address(ls_address) in subnet
    for address in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "169.254.169.254", "172.17.0.1", "::1", "fd00::1"):
        assert is_banned(address), address
    assert not is_banned("93.184.215.14")  # a public address stays allowed, as with Label Studio's defaults


@pytest.mark.skipif(not LABEL_STUDIO_IO.exists(), reason="Label Studio's venv (.cache/ls-venv) is not installed")
def test_the_default_banned_list_is_label_studios_own():
    import ast

    tree = ast.parse(LABEL_STUDIO_IO.read_text())
    (lists,) = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "default_banned_subnets"
    ]
    assert [ast.literal_eval(e) for e in lists.elts] == LABEL_STUDIO_DEFAULT_BANNED


def _compose_config(env_extra: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_FILE")}
    env.update(env_extra)
    return subprocess.run(
        ["docker", "compose", "-f", "docker-compose.yml", "--env-file", "/dev/null", "config"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _compose_available() -> bool:
    try:
        return subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _compose_available(), reason="no `docker compose` CLI")
def test_docker_compose_refuses_a_missing_password_and_prints_no_secret(tmp_path):
    """``docker compose config`` (no daemon needed): no password file, no stack; with both files, the
    resolved configuration names the files but holds neither value."""
    token, password = "f" * 40, "pw-" + "x" * 20
    (tmp_path / "key").write_text(token + "\n")
    (tmp_path / "password").write_text(password + "\n")
    missing = _compose_config({"LABEL_STUDIO_API_KEY_FILE": str(tmp_path / "key")})
    assert missing.returncode != 0 and "set LABEL_STUDIO_PASSWORD_FILE to a file holding" in missing.stderr
    ok = _compose_config(
        {"LABEL_STUDIO_API_KEY_FILE": str(tmp_path / "key"), "LABEL_STUDIO_PASSWORD_FILE": str(tmp_path / "password")}
    )
    assert ok.returncode == 0, ok.stderr
    assert token not in ok.stdout and password not in ok.stdout
    assert str(tmp_path / "key") in ok.stdout and "/run/secrets/label_studio_api_key" in ok.stdout


def test_image_installs_what_ci_installs():
    setup = (ROOT / "scripts" / "setup_env.sh").read_text()
    assert 'pip_run bash scripts/install_backend.sh "$FLAVOR" .venv/bin/python' in setup  # CI's install step
    # CI (no download.pytorch.org) gets PyPI's build, exactly the lock; a GPU machine too
    assert "download.pytorch.org is unreachable: PyPI's build" in setup and 'FLAVOR=cuda WHY="an NVIDIA GPU' in setup
    assert 'RUN bash /app/install_backend.sh "${FLAVOR}" python' in DOCKERFILE  # the image's
    assert "COPY requirements.txt scripts/install_backend.sh /app/" in DOCKERFILE
    # the dependency layer comes before the code, so code changes do not reinstall torch
    assert DOCKERFILE.index('install_backend.sh "${FLAVOR}"') < DOCKERFILE.index("COPY ml_backend")


def test_cpu_flavor_swaps_only_torch_and_cuda_libraries():
    script = (ROOT / "scripts" / "install_backend.sh").read_text()
    pattern = re.search(r"grep -vE '([^']+)'", script).group(1)
    lock = [l for l in (ROOT / "requirements.txt").read_text().splitlines() if l and not l.startswith("#")]
    dropped = {l.split("==")[0] for l in lock if re.search(pattern, l)}
    assert {"torch", "torchvision"} <= dropped
    assert all(d in ("torch", "torchvision", "triton") or d.startswith(("nvidia-", "cuda-")) for d in dropped), dropped


def test_dockerignore_is_an_allow_list_that_admits_every_copied_file():
    rules = [
        l.strip() for l in (ROOT / ".dockerignore").read_text().splitlines() if l.strip() and not l.startswith("#")
    ]
    assert rules[0] == "*"

    def included(path: str) -> bool:
        ok = True
        for rule in rules:
            negate = rule.startswith("!")
            pat = rule[1:] if negate else rule
            if fnmatch.fnmatch(path, pat) or fnmatch.fnmatch(path, pat.rstrip("*").rstrip("/") + "/*"):
                ok = negate
        return ok

    copies = re.findall(r"^COPY (.+) /app/\S*$", DOCKERFILE, re.M)
    sources = [s for line in copies for s in line.split()]
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        files = [str(p.relative_to(ROOT)) for p in path.rglob("*.py")] if path.is_dir() else [source]
        assert files and all(included(f) for f in files), source
    assert not included("tests/service/test_app.py") and not included(".venv/bin/python")


def _lock(name: str) -> dict[str, str]:
    return {
        l.split("==")[0].lower(): l.split("==")[1]
        for l in (ROOT / name).read_text().splitlines()
        if "==" in l and not l.startswith("#")
    }


def test_pyproject_pins_match_the_locks():
    """Runtime pins are in the runtime lock (what the image installs); test tools only in the dev lock."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime, dev = _lock("requirements.txt"), _lock("requirements-dev.txt")
    for pin in project["dependencies"]:
        name, version = pin.split("==")
        assert runtime.get(name.lower()) == version, pin
    for pin in project["optional-dependencies"]["test"]:
        name, version = pin.split("==")
        assert dev.get(name.lower()) == version and name.lower() not in runtime, pin
    assert not set(runtime) & set(dev)
    assert "-r requirements.txt" in (ROOT / "requirements-dev.txt").read_text().splitlines()


@pytest.mark.parametrize(
    "page, heading, topic",
    [
        ("troubleshooting.md", "# Troubleshooting", "legacy"),
        ("troubleshooting.md", "# Troubleshooting", "Personal Access Token"),
        ("troubleshooting.md", "# Troubleshooting", "SSRF"),
        ("troubleshooting.md", "# Troubleshooting", "model_version"),
        ("troubleshooting.md", "# Troubleshooting", "Uncertainty sampling"),
        ("troubleshooting.md", "# Troubleshooting", "webhook"),
        ("backbones.md", "## Weights", "IMAGENET1K_V1"),
        ("backbones.md", "## Weights", "state_dict"),
    ],
)
def test_troubleshooting_and_weights_are_documented(page, heading, topic):
    text = (ROOT / "docs" / page).read_text()
    start = text.index(heading)
    section = text[start : text.find("\n## ", start + 1) if heading.startswith("## ") else None]
    assert topic in section


def test_readme_and_docs_links_resolve():
    """Every relative link of the README and docs/ names a file that exists, and its #anchor a heading
    (GitHub's slugs) or an explicit <a id> of that file."""

    def anchors(path):
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        found = set(re.findall(r'<a id="([^"]+)"', text))
        for title in re.findall(r"^#{1,6} (.+)$", text, re.M):
            found.add(re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-"))
        return found

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            name, _, anchor = target.partition("#")
            path = (page.parent / name).resolve() if name else page
            if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken


def test_env_example_names_every_compose_variable():
    example = (ROOT / ".env.example").read_text()
    names = set(re.findall(r"^([A-Z_]+)=", example, re.M))
    used = set(re.findall(r"\$\{([A-Z_]+)", (ROOT / "docker-compose.yml").read_text()))
    required = {"LABEL_STUDIO_API_KEY_FILE", "LABEL_STUDIO_PASSWORD_FILE", "LABEL_STUDIO_BIND", "BACKBONE", "WEIGHTS"}
    assert required <= names <= used | LABEL_STUDIO_VARS
    assert not names & {*SECRET_SETTINGS, "LABEL_STUDIO_PASSWORD"}  # a secret is a file, never a value in .env
    assert 'print(secrets.token_hex(20))" > secrets/label_studio_api_key' in example  # how to make both
    assert 'print(secrets.token_urlsafe(24))" > secrets/label_studio_password' in example
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_backend_containers_are_read_only_with_a_volume_and_tmpfs():
    for name in ("backend", "backend-gpu"):
        service = COMPOSE["services"][name]
        assert service["read_only"] is True and service["tmpfs"] == ["/tmp"]
    assert "USER 10001:10001" in DOCKERFILE


def test_every_methods_citation_points_into_docs_methods():
    """Code and docs cite the project's own methods document, and every section they cite exists."""
    text = (ROOT / "docs" / "methods.md").read_text()
    sections = set(re.findall(r"^#{2,3} (\d+(?:\.\d+)?)\.? ", text, re.M))
    files = [
        p
        for d in ("ml_backend", "strategies", "benchmarks", "scripts", "tests", "docs")
        for p in (ROOT / d).rglob("*")
        if p.suffix in (".py", ".md")
    ] + [ROOT / "README.md"]
    cited = set()
    for path in files:
        for line in path.read_text().splitlines():
            assert "METHODS" + ".md" not in line, f"{path}: cites a file outside the repository"
            if "methods.md" in line and "§" in line:
                cited |= {(path.name, s) for s in re.findall(r"§(\d+(?:\.\d+)?)", line)}
    assert len(cited) > 20
    assert {s for _, s in cited} <= sections, sorted(c for c in cited if c[1] not in sections)
