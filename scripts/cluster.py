"""A real Atrium cluster on one machine, without Docker: N replicas behind the real nginx.

    python scripts/cluster.py up --replicas 3 [--port 8080] [--workers 1]
    python scripts/cluster.py status | restart | down

Every replica is an ``atrium serve`` process on its own loopback port, named ``replica-K``
(``X-Atrium-Replica``), all sharing the PostgreSQL of ``ATRIUM_DATABASE_URL`` and the Redis of
``ATRIUM_REDIS_URL``. Migrations run once, before any replica starts (``atrium migrate``), like
compose's one-shot service and the Kubernetes Job. nginx runs ``deploy/nginx/atrium.conf`` — the
very file compose mounts — with an upstream listing the replicas' ports. ``restart`` replaces
every replica one at a time (SIGTERM, drain, start, wait until ready). State lives in
``--dir`` (default ``.cluster/``), so ``down`` and ``status`` work from another shell.

``tests/deploy/test_cluster.py`` drives the same :class:`Cluster` from Python.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NGINX_SHARED_CONF = REPO / "deploy" / "nginx" / "atrium.conf"
# The upstream parameters compose uses (deploy/nginx/compose/upstream.conf), one line per port.
UPSTREAM_SERVER = "    server 127.0.0.1:{port} max_fails=1 fail_timeout=3s;\n"
# nginx benches a replica that failed for fail_timeout (3 s), even once it is back. Like
# Kubernetes' minReadySeconds / Nomad's min_healthy_time, a rolling restart waits this long
# after a replica is ready before taking the next one down, so two are never benched at once.
MIN_READY_SECONDS = 4.0


class ClusterError(RuntimeError):
    """The cluster could not be started or stopped as asked."""


def find_nginx() -> str:
    """The nginx binary, or a loud error saying how to get it."""
    found = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if not found:
        raise ClusterError("nginx is not installed: apt-get install -y nginx-light (or nginx)")
    return found


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The status ``url`` answers with, ``None`` when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # Our own child: reap it, or it stays a zombie that "exists".
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return True
        except ChildProcessError:
            if not _alive(pid):
                return True
        time.sleep(0.05)
    return False


@dataclass
class Replica:
    """One ``atrium serve`` process."""

    name: str
    port: int
    pid: int | None = None

    @property
    def url(self) -> str:
        """Its own base URL (bypassing the balancer)."""
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Cluster:
    """N replicas + nginx under ``root``; ``env`` carries the shared storage settings."""

    root: Path
    env: Mapping[str, str]
    replicas: list[Replica] = field(default_factory=list)
    lb_port: int = 0
    workers: int = 1
    nginx_pid: int | None = None
    python: str = sys.executable

    # --- state ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """The balancer's base URL."""
        return f"http://127.0.0.1:{self.lb_port}"

    @property
    def state_file(self) -> Path:
        """Where ``up`` leaves what ``down``/``status``/``restart`` need."""
        return self.root / "state.json"

    def save(self) -> None:
        """Write the state file (it holds the cluster's secrets: owner-only)."""
        state = {
            "lb_port": self.lb_port,
            "workers": self.workers,
            "nginx_pid": self.nginx_pid,
            "replicas": [r.__dict__ for r in self.replicas],
            "env": dict(self.env),
        }
        self.state_file.touch(mode=0o600)
        self.state_file.write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, root: Path) -> Cluster:
        """The cluster ``up`` started in ``root``."""
        state = json.loads((root / "state.json").read_text())
        return cls(
            root=root,
            env=state["env"],
            replicas=[Replica(**r) for r in state["replicas"]],
            lb_port=state["lb_port"],
            workers=state["workers"],
            nginx_pid=state["nginx_pid"],
        )

    # --- lifecycle -----------------------------------------------------------------------
    def up(self, replicas: int) -> None:
        """Migrate once, start every replica, then nginx in front of them."""
        nginx = find_nginx()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(exist_ok=True)
        self.migrate()
        self.lb_port = self.lb_port or free_port()
        self.replicas = [Replica(f"replica-{k}", free_port()) for k in range(1, replicas + 1)]
        try:
            for replica in self.replicas:
                self.start_replica(replica)
            for replica in self.replicas:
                self.wait_ready(replica)
            self.start_nginx(nginx)
        except BaseException:
            self.down()
            raise
        self.save()

    def migrate(self) -> None:
        """``atrium migrate`` once, before any replica exists."""
        log = self.root / "logs" / "migrate.log"
        with log.open("wb") as out:
            code = subprocess.call(
                [self.python, "-m", "atrium.cli", "migrate"],
                env=self._env(),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if code:
            raise ClusterError(f"atrium migrate failed:\n{log.read_text()}")

    def _env(self, **extra: str) -> dict[str, str]:
        env = dict(self.env)
        # Replicas never migrate; the one-shot step above did (ATRIUM_AUTO_MIGRATE=false).
        env.update(ATRIUM_AUTO_MIGRATE="false", **extra)
        return env

    def start_replica(self, replica: Replica) -> None:
        """Start ``atrium serve`` for ``replica`` (returns before it is ready)."""
        log = self.root / "logs" / f"{replica.name}.log"
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [
                    *(self.python, "-m", "atrium.cli", "serve"),
                    *("--host", "127.0.0.1", "--port", str(replica.port)),
                    *("--workers", str(self.workers)),
                ],
                env=self._env(ATRIUM_REPLICA_NAME=replica.name),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: master + workers
            )
        replica.pid = proc.pid

    def wait_ready(self, replica: Replica, timeout: float = 60.0) -> None:
        """Block until ``replica`` answers ``/readyz`` with 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if replica.pid is None or not _alive(replica.pid):
                break
            if http_status(replica.url + "/readyz") == 200:
                return
            time.sleep(0.1)
        log = self.root / "logs" / f"{replica.name}.log"
        raise ClusterError(f"{replica.name} did not become ready:\n{log.read_text()[-4000:]}")

    def stop_replica(self, replica: Replica, sig: signal.Signals = signal.SIGTERM) -> None:
        """SIGTERM (graceful drain) or SIGKILL ``replica`` and wait until it is gone."""
        if replica.pid is None:
            return
        try:
            if sig == signal.SIGKILL:
                os.killpg(replica.pid, signal.SIGKILL)  # master and workers, like a lost node
            else:
                os.kill(replica.pid, sig)  # the master; it drains its workers
        except ProcessLookupError:
            pass
        if not _wait_gone(replica.pid, timeout=60):
            os.killpg(replica.pid, signal.SIGKILL)
            _wait_gone(replica.pid, timeout=10)
            raise ClusterError(f"{replica.name} ignored {sig.name} for 60 s; killed")
        replica.pid = None

    def restart_replica(self, replica: Replica) -> None:
        """Replace one replica in place: drain it, start it again, wait until ready."""
        self.stop_replica(replica)
        self.start_replica(replica)
        self.wait_ready(replica)
        self.save()
        time.sleep(MIN_READY_SECONDS)

    def rolling_restart(self) -> None:
        """Restart every replica, one at a time."""
        for replica in self.replicas:
            self.restart_replica(replica)

    # --- nginx ---------------------------------------------------------------------------
    def render_nginx(self) -> Path:
        """Write nginx.conf + atrium/{upstream,site}.conf; the shared file is included as is."""
        conf_dir = self.root / "nginx"
        (conf_dir / "atrium").mkdir(parents=True, exist_ok=True)
        for temp in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
            path = conf_dir / "tmp" / temp
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o777)  # nginx workers drop to `nobody` when started as root
        upstream = "".join(UPSTREAM_SERVER.format(port=r.port) for r in self.replicas)
        (conf_dir / "atrium" / "upstream.conf").write_text(
            f"upstream atrium_api {{\n{upstream}    keepalive 32;\n    keepalive_timeout 15s;\n}}\n"
        )
        (conf_dir / "atrium" / "site.conf").write_text(
            f"listen 127.0.0.1:{self.lb_port};\n"
            f"access_log {self.root / 'logs' / 'nginx-access.log'} atrium_lb;\n"
        )
        tmp = conf_dir / "tmp"
        main = conf_dir / "nginx.conf"
        main.write_text(
            "daemon off;\n"
            "worker_processes 1;\n"
            f"pid {conf_dir / 'nginx.pid'};\n"
            f"error_log {self.root / 'logs' / 'nginx-error.log'} warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"    client_body_temp_path {tmp / 'body'};\n"
            f"    proxy_temp_path {tmp / 'proxy'};\n"
            f"    fastcgi_temp_path {tmp / 'fastcgi'};\n"
            f"    uwsgi_temp_path {tmp / 'uwsgi'};\n"
            f"    scgi_temp_path {tmp / 'scgi'};\n"
            f"    include {NGINX_SHARED_CONF};\n"
            "}\n"
        )
        return main

    def start_nginx(self, nginx: str | None = None) -> None:
        """Validate (``nginx -t``) and start nginx; wait until it proxies to a replica."""
        nginx = nginx or find_nginx()
        main = self.render_nginx()
        prefix = str(main.parent) + "/"
        check = subprocess.run(
            [nginx, "-t", "-q", "-p", prefix, "-c", str(main)], capture_output=True, text=True
        )
        if check.returncode:
            raise ClusterError(f"nginx -t rejected the config:\n{check.stderr}")
        log = (self.root / "logs" / "nginx.out").open("ab")
        proc = subprocess.Popen(
            [nginx, "-p", prefix, "-c", str(main)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.nginx_pid = proc.pid
        deadline = time.monotonic() + 20
        while http_status(self.url + "/livez") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise ClusterError("nginx did not start: see " + str(self.root / "logs"))
            time.sleep(0.05)

    def down(self) -> None:
        """Stop nginx, then every replica (gracefully), and forget the state."""
        if self.nginx_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.nginx_pid, signal.SIGQUIT)  # graceful: finish open requests
            if not _wait_gone(self.nginx_pid, timeout=20):
                os.killpg(self.nginx_pid, signal.SIGKILL)
            self.nginx_pid = None
        for replica in self.replicas:
            self.stop_replica(replica)
        self.state_file.unlink(missing_ok=True)

    def status(self) -> dict[str, object]:
        """Which processes answer."""
        return {
            "balancer": {"url": self.url, "livez": http_status(self.url + "/livez")},
            "replicas": {
                r.name: {"url": r.url, "pid": r.pid, "readyz": http_status(r.url + "/readyz")}
                for r in self.replicas
            },
        }


def _storage_env() -> dict[str, str]:
    env = dict(os.environ)
    missing = [n for n in ("ATRIUM_DATABASE_URL", "ATRIUM_REDIS_URL") if not env.get(n)]
    if missing:
        raise ClusterError(
            f"set {' and '.join(missing)}: replicas share one PostgreSQL and one Redis "
            "(e.g. postgresql://postgres@127.0.0.1:5432/atrium, redis://127.0.0.1:6379/0)"
        )
    if not env["ATRIUM_DATABASE_URL"].startswith(("postgres://", "postgresql")):
        raise ClusterError("ATRIUM_DATABASE_URL must be PostgreSQL: SQLite is one machine's file")
    env.setdefault("ATRIUM_ENV", "development")
    env.setdefault("ATRIUM_LOG_LEVEL", "INFO")
    # With PostgreSQL every replica needs the same secrets (a secret one replica generated
    # would not exist on the others): make one set for this cluster unless given.
    if not env.get("ATRIUM_ENCRYPTION_KEY"):
        env["ATRIUM_ENCRYPTION_KEY"] = "cluster:" + base64.b64encode(os.urandom(32)).decode()
        print("cluster: generated ATRIUM_ENCRYPTION_KEY for this cluster (in its state.json)")
    if not env.get("ATRIUM_TOKEN_SECRET"):
        env["ATRIUM_TOKEN_SECRET"] = secrets.token_urlsafe(32)
    # The replicas import the atrium of this checkout, installed or not.
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), *filter(None, [env.get("PYTHONPATH")])])
    return env


def main(argv: list[str] | None = None) -> int:
    """``up | down | status | restart``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "status", "restart"])
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="workers per replica")
    parser.add_argument("--port", type=int, default=8080, help="the balancer's port")
    parser.add_argument("--dir", type=Path, default=REPO / ".cluster")
    args = parser.parse_args(argv)
    root: Path = args.dir.resolve()
    try:
        if args.command == "up":
            if (root / "state.json").exists():
                raise ClusterError(f"a cluster is already up in {root}: run `down` first")
            cluster = Cluster(
                root=root, env=_storage_env(), lb_port=args.port, workers=args.workers
            )
            cluster.up(args.replicas)
            print(f"{args.replicas} replicas behind nginx at {cluster.url} (logs: {root}/logs)")
            return 0
        if not (root / "state.json").exists():
            raise ClusterError(f"no cluster is up in {root}")
        cluster = Cluster.load(root)
        if args.command == "down":
            cluster.down()
        elif args.command == "restart":
            cluster.rolling_restart()
        print(json.dumps(cluster.status(), indent=2))
        return 0
    except ClusterError as exc:
        print(f"cluster: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
