"""Deployment files, without a Docker engine (CI has none; tests/integration/test_container.py builds and runs the
stack where one answers): lint the Dockerfile and check that the image, compose file and docs use only
settings that exist and the same install steps as CI."""

import fnmatch
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
# Label Studio's own settings used by the compose file (LABEL_STUDIO.md §2)
LABEL_STUDIO_VARS = {
    "LABEL_STUDIO_USERNAME",
    "LABEL_STUDIO_PASSWORD",
    "LABEL_STUDIO_USER_TOKEN",
    "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN",
    "LABEL_STUDIO_ML_BLOCK_LOCAL_IP",
    "LABEL_STUDIO_SSRF_PROTECTION_ENABLED",
    "LABEL_STUDIO_HOST",
    *LABEL_STUDIO_FLAGS,  # its own feature flags that the demo's Label Studio runs with too
}
# compose-only knobs (.env.example): host ports and the image flavor
COMPOSE_VARS = {"LABEL_STUDIO_PORT", "BACKEND_PORT", "FLAVOR"}
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
    assert ls["environment"]["LABEL_STUDIO_ML_BLOCK_LOCAL_IP"] == "false"
    assert {k: ls["environment"][k] for k in LABEL_STUDIO_FLAGS} == LABEL_STUDIO_FLAGS  # the same as the demo's
    text = (ROOT / "docker-compose.yml").read_text()
    for var in set(re.findall(r"\$\{([A-Z_]+)", text)):
        assert var in ENV_VARS or var in LABEL_STUDIO_VARS or var in COMPOSE_VARS, var
    assert (
        services["backend"]["volumes"] == services["backend-gpu"]["volumes"] == ["models:/data", "torch-hub:/opt/torch"]
    )


def test_image_installs_what_ci_installs():
    setup = (ROOT / "scripts" / "setup_env.sh").read_text()
    assert 'bash scripts/install_backend.sh "${TORCH_FLAVOR:-cuda}" .venv/bin/python' in setup  # CI's install step
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
    assert {"LABEL_STUDIO_API_KEY", "LABEL_STUDIO_PASSWORD", "BACKBONE", "WEIGHTS"} <= names <= used | LABEL_STUDIO_VARS
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
