"""The wheel runs on its own; the Dockerfile, compose file and systemd unit say what the README says.

The image is not built here (no container runtime on these machines): the Dockerfile's install
command is run for real on the files it copies, its CMD is started from the result, and its
HEALTHCHECK command is pointed at that server.
"""

from __future__ import annotations

import json
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import yaml

from codexlb.settings import Settings
from codexlb.testing.fake_upstream import FakeUpstream
from tests.deploy.procs import BODY, NGINX_CONF, ROOT, codexlb_env, free_port, running, seed_accounts, stop

DOCKERFILE = (ROOT / "Dockerfile").read_text()
README = (ROOT / "README.md").read_text()
REPO_ONLY = ("codexlb/testing/db.py", "codexlb/testing/sim_upstream.py")


def instructions(name: str) -> list[str]:
    text = DOCKERFILE.replace("\\\n", " ")
    return [line.split(None, 1)[1].strip() for line in text.splitlines() if line.split(None, 1)[:1] == [name]]


def build_context(tmp: Path) -> Path:
    """The files the Dockerfile copies, laid out as it lays them out."""
    context = tmp / "context"
    context.mkdir()
    for copy in instructions("COPY"):
        *sources, dest = copy.split()
        for source in sources:
            target = context / (source if dest.endswith("/") else dest.removeprefix("./"))
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, symlinks=True,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(ROOT / source, target)
    return context


def test_dockerfile_shape() -> None:
    assert re.search(r"^FROM python:3\.\d+-slim$", DOCKERFILE, re.M)
    assert instructions("USER") == ["codexlb"]
    assert instructions("VOLUME") == ['["/data"]']
    assert "/readyz" in instructions("HEALTHCHECK")[0]
    assert instructions("RUN")[-1] == "python -m pip install ."
    assert instructions("CMD") == ['["codexlb", "serve"]']
    for command in ("pip install .", "codexlb serve", "docker build"):
        assert command in README, f"README does not show {command!r}"
    assert "not built in CI" in README


def test_compose_file_parses_and_wires_the_shipped_config() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "codexlb", "nginx"}
    assert services["codexlb"]["build"] == "."
    assert services["codexlb"]["environment"]["CODEX_LB_DATABASE_URL"].startswith("postgresql+asyncpg://")
    mounts = services["nginx"]["volumes"]
    assert any(m.startswith("./deploy/nginx/codexlb.conf:") for m in mounts)
    assert "server 127.0.0.1:2455;" in NGINX_CONF.read_text()  # what the compose command rewrites


def test_nginx_body_limit_matches_the_setting() -> None:
    conf = NGINX_CONF.read_text()
    megabytes = int(re.search(r"client_max_body_size (\d+)m;", conf).group(1))  # type: ignore[union-attr]
    assert megabytes * 1024 * 1024 == Settings.max_decompressed_body_bytes
    assert f"CODEX_LB_MAX_DECOMPRESSED_BODY_BYTES = {Settings.max_decompressed_body_bytes}" in conf


def test_systemd_unit() -> None:
    unit = (ROOT / "deploy" / "codexlb.service").read_text()
    assert re.search(r"^ExecStart=\S*codexlb serve$", unit, re.M)
    stop_after = int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M).group(1))  # type: ignore[union-attr]
    assert stop_after > Settings.shutdown_grace_seconds
    assert "RestartPreventExitStatus=2" in unit


async def test_wheel_installs_and_serves(tmp_path: Path) -> None:
    context = build_context(tmp_path)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(tmp_path / "dist"),
                            str(context)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    wheel = next((tmp_path / "dist").glob("codexlb-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "codexlb/migrations/versions/0001_initial.py" in names and "codexlb/migrations/script.py.mako" in names
    assert "plugins/metrics.py" in names and "codexlb/asgi.py" in names and "codexlb/testing/harness.py" in names
    assert not [n for n in names if n in REPO_ONLY or n.startswith(("tests/", "bench/"))]

    venv = tmp_path / "venv"  # a fresh venv; the dependencies come from this interpreter's site-packages
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    purelib = subprocess.run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
                                "--quiet", "--no-deps", "--no-index", str(wheel)], capture_output=True, text=True)
    assert installed.returncode == 0, installed.stderr[-3000:]

    workdir = tmp_path / "run"  # nowhere near the repository
    workdir.mkdir()
    async with FakeUpstream() as fake:
        await seed_accounts(workdir, fake, 1)
        port = free_port()
        env = codexlb_env(workdir, fake, port, ("firewall", "select_round_robin", "upstream", "metrics"))
        async with running([str(venv / "bin" / "codexlb"), "serve"], env, workdir,
                           f"http://127.0.0.1:{port}/readyz") as proc:
            where = subprocess.run([venv / "bin" / "python", "-c", "import codexlb; print(codexlb.__file__)"],
                                   capture_output=True, text=True, cwd=workdir, check=True).stdout
            assert where.startswith(purelib)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
                answer = await client.post("/backend-api/codex/responses", json=BODY)
                assert answer.status_code == 200 and b"response.completed" in answer.content
            healthcheck = json.loads(instructions("HEALTHCHECK")[0].split("CMD", 1)[1])
            probe = [healthcheck[0].replace("python", str(venv / "bin" / "python")),
                     *[part.replace(":2455/", f":{port}/") for part in healthcheck[1:]]]
            assert subprocess.run(probe, timeout=30).returncode == 0
            assert await stop(proc) == 0
