"""What deploy/ gives the API process, read from the shipped files, and a way to run it here.

The image's environment, entrypoint and working directory come from ``deploy/Dockerfile``; the
Kubernetes ConfigMap, Deployment and migration Job from ``deploy/k8s/base``; the Compose
service's environment and command from ``deploy/compose.yaml``. Tests start ``atrium`` with
exactly those, changing only what cannot be the same on a shared test machine
(:func:`on_this_machine`): the port, and the container's private ``/tmp``.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.support import SERVER_LOGS

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
# What the base image (python:3.11-slim-bookworm) sets before our Dockerfile's ENV lines.
BASE_IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
# Where the image installs Atrium; here it is the test run's own virtualenv.
IMAGE_VENV_BIN = "/opt/atrium/bin"
# The image's user has no home directory (useradd --home-dir /nonexistent --no-create-home).
IMAGE_HOME = "/nonexistent"


@dataclass
class Image:
    """The runtime stage of the Dockerfile: what a container starts with."""

    env: dict[str, str]
    entrypoint: list[str]
    cmd: list[str]
    workdir: str = "/"


def _logical_lines(text: str) -> Iterator[str]:
    """Dockerfile instructions, continuation lines joined and comments dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not pending):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""


def _expand(value: str, env: Mapping[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)


def read_image(dockerfile: Path = DEPLOY / "Dockerfile") -> Image:
    """ENV, WORKDIR, ENTRYPOINT and CMD of the Dockerfile's last (runtime) stage."""
    image = Image(env={}, entrypoint=[], cmd=[])
    for line in _logical_lines(dockerfile.read_text()):
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            image = Image(env=dict(BASE_IMAGE_ENV), entrypoint=[], cmd=[])
        elif instruction == "ENV":
            for pair in shlex.split(rest):
                name, sep, value = pair.partition("=")
                assert sep, f"ENV {pair!r}: only the KEY=VALUE form is read here"
                image.env[name] = _expand(value, image.env)
        elif instruction == "WORKDIR":
            image.workdir = rest.strip()
        elif instruction in {"ENTRYPOINT", "CMD"}:
            assert rest.lstrip().startswith("["), f"{instruction} must use the exec form"
            setattr(image, instruction.lower(), yaml.safe_load(rest))
    assert image.entrypoint, "the Dockerfile has no ENTRYPOINT"
    return image


@dataclass
class Launch:
    """A process to start: argv, environment and working directory, as this machine runs it."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int = 0
    secrets: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Where it listens, seen from this machine."""
        return f"http://127.0.0.1:{self.port}"


def on_this_machine(
    image: Image, args: list[str], env: Mapping[str, str], *, tmp: Path, port: int
) -> Launch:
    """``image``'s entrypoint with ``args`` and ``env`` on top of the image's environment, here.

    Only three things differ from the container: ``atrium`` is this test run's (the image's
    venv is this virtualenv), the container's private ``/tmp`` is ``tmp``, and ATRIUM_PORT is
    a free port (tests run side by side on one machine).
    """
    full = {**image.env, **env}
    full["HOME"] = IMAGE_HOME
    for name, value in full.items():
        if value == "/tmp" or value.startswith("/tmp/"):  # the container's private /tmp
            full[name] = str(tmp) + value[len("/tmp") :]
    # After the /tmp mapping: this checkout (and its venv) may itself live under /tmp.
    venv_bin = str(Path(sys.executable).parent)
    full["PATH"] = full["PATH"].replace(IMAGE_VENV_BIN, venv_bin)
    assert "ATRIUM_PORT" in full, "the image sets ATRIUM_PORT"
    full["ATRIUM_PORT"] = str(port)
    workdir = image.workdir
    cwd = tmp / workdir[len("/tmp") :].lstrip("/") if workdir.startswith("/tmp") else Path(workdir)
    tmp.mkdir(parents=True, exist_ok=True)
    return Launch(argv=[*image.entrypoint, *args], env=full, cwd=cwd, port=port)


def k8s_documents(path: Path) -> list[dict[str, Any]]:
    """Every YAML document of a kustomize base file."""
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def configmap_env() -> dict[str, str]:
    """``data`` of the base's ConfigMap (every replica's ``envFrom``)."""
    (configmap,) = k8s_documents(DEPLOY / "k8s" / "base" / "configmap.yaml")
    return {str(k): str(v) for k, v in configmap["data"].items()}


def secret_names() -> set[str]:
    """The variables the Secret must provide (the base's template lists them)."""
    (secret,) = k8s_documents(DEPLOY / "k8s" / "base" / "secret.yaml")
    return set(secret["stringData"])


def k8s_container(kind_file: str) -> dict[str, Any]:
    """The first container of the Deployment or Job in ``deploy/k8s/base/<kind_file>``."""
    (document,) = k8s_documents(DEPLOY / "k8s" / "base" / kind_file)
    container: dict[str, Any] = document["spec"]["template"]["spec"]["containers"][0]
    return container


def k8s_pod_env(container: dict[str, Any], pod_name: str) -> dict[str, str]:
    """The container's own ``env`` entries; ``fieldRef: metadata.name`` is the pod's name."""
    env: dict[str, str] = {}
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
        else:
            field_path = entry["valueFrom"]["fieldRef"]["fieldPath"]
            assert field_path == "metadata.name", f"{entry['name']}: {field_path} is not rendered"
            env[entry["name"]] = pod_name
    return env


def _compose_service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"][
        name
    ]
    return service


def compose_command(name: str) -> list[str]:
    """A Compose service's ``command`` (the arguments after the image's entrypoint)."""
    return [str(arg) for arg in _compose_service(name)["command"]]


def compose_env(name: str, variables: Mapping[str, str]) -> dict[str, str]:
    """A Compose service's environment, ``${VAR}`` / ``${VAR:-x}`` / ``${VAR:?…}`` filled in
    from ``variables`` (what the operator exports) as ``docker compose`` does."""

    def fill(match: re.Match[str]) -> str:
        var, op, default = match.group(1), match.group(2) or "", match.group(3) or ""
        if variables.get(var):
            return variables[var]
        assert op != ":?", f"compose.yaml requires {var}"
        return default if op == ":-" else ""

    pattern = re.compile(r"\$\{(\w+)(:\?|:-)?([^}]*)\}")
    environment = _compose_service(name)["environment"]
    return {str(k): pattern.sub(fill, str(v)) for k, v in environment.items()}


def run_once(launch: Launch, log: Path, timeout: float = 120) -> str:
    """Run a one-shot command (a migration Job, ``atrium apikeys create``); its stdout.

    Its log (stderr) is checked for secrets like a server's; stdout is the command's answer.
    """
    result = subprocess.run(
        launch.argv,
        env=launch.env,
        cwd=launch.cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    log.write_text(result.stderr)
    SERVER_LOGS.append(log)
    assert result.returncode == 0, f"{shlex.join(launch.argv)} failed:\n{result.stderr}"
    return result.stdout


@dataclass
class Running:
    """A started server: its process, where it listens and what it wrote."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        """Everything the server wrote so far (stdout and stderr)."""
        return self.log.read_text(errors="replace")


@contextmanager
def serving(launch: Launch, log: Path, timeout: float = 60) -> Iterator[Running]:
    """Start ``launch``, wait for ``/livez``, SIGTERM it after (and expect a clean exit)."""
    SERVER_LOGS.append(log)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            launch.argv,
            env=launch.env,
            cwd=launch.cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Running(proc, launch.url, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"server exited early:\n{running.output()}"
            try:
                if httpx.get(f"{launch.url}/livez", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"server did not start:\n{running.output()}"
            time.sleep(0.1)
        yield running
        proc.send_signal(signal.SIGTERM)  # what Docker and Kubernetes send
        assert proc.wait(timeout=60) == 0, running.output()[-3000:]
    finally:
        if proc.poll() is None:  # a failed test: stop it gently, so its last logs are written
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def worker_pids(master: int) -> set[int]:
    """The master's child processes (its workers), from /proc."""
    children: set[int] = set()
    for task in Path(f"/proc/{master}/task").iterdir():
        children.update(int(pid) for pid in (task / "children").read_text().split())
    return children


def multiprocess_dir(master: int) -> Path | None:
    """The folder the server writes its samples to, seen from outside (its mapped files)."""
    for pid in (master, *worker_pids(master)):
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            path = line.split(maxsplit=5)[-1]
            if re.search(r"/counter_[0-9]+\.db$", path):
                return Path(path).parent
    return None


def exposed(text: str, name: str, labels: Mapping[str, str]) -> float:
    """The value of ``name{labels}`` in a Prometheus exposition (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == dict(labels):
                return sample.value
    return 0.0


def counts_by_worker(directory: Path, name: str, labels: Mapping[str, str]) -> dict[int, float]:
    """``name{labels}`` as each process wrote it into ``directory`` (its own sample file)."""
    counts: dict[int, float] = {}
    for file in directory.glob("counter_*.db"):
        pid = int(file.stem.rpartition("_")[2])
        for metric in MultiProcessCollector.merge([str(file)]):  # type: ignore[no-untyped-call]
            for sample in metric.samples:
                if sample.name == name and sample.labels == dict(labels) and sample.value:
                    counts[pid] = sample.value
    return counts


def wait_for(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Poll ``condition()`` until it is true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


HTTP_REQUESTS = "atrium_http_requests_total"


def load_every_worker(
    url: str, master: int, path: str, labels: Mapping[str, str], headers: Mapping[str, str]
) -> tuple[int, dict[int, float]]:
    """GET ``path`` on fresh connections (the kernel spreads them over the workers) until every
    worker has served some, and until each request is counted; (requests sent, count per pid).
    """
    workers = worker_pids(master)
    wait_for(lambda: multiprocess_dir(master), "a multiprocess sample folder")
    directory = multiprocess_dir(master)
    assert directory is not None

    def counts() -> dict[int, float]:
        return counts_by_worker(directory, HTTP_REQUESTS, labels)

    def hit(_: int) -> int:
        return httpx.get(f"{url}{path}", headers=dict(headers), timeout=10).status_code

    expected = int(labels["status"])
    sent = 0
    with ThreadPoolExecutor(max_workers=8) as pool:
        while set(counts()) != workers and sent < 2000:
            assert set(pool.map(hit, range(40))) == {expected}
            sent += 40
    # A request is counted just after its response went out: let the last ones land.
    wait_for(lambda: sum(counts().values()) == sent, "every request counted")
    per_worker = counts()
    assert set(per_worker) == workers, f"not every worker served: {per_worker} of {workers}"
    return sent, per_worker
