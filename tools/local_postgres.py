"""A throwaway PostgreSQL server in a temporary folder, on a local port: for the tests and
`quill bench store`, never for a bot's real data.

    with LocalPostgres() as server:
        url = server.new_database()   # postgresql://quill@127.0.0.1:PORT/quill_1

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user.
"""
from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = ("PostgreSQL is not installed: on Debian or Ubuntu `apt-get install postgresql` "
                "(15 or newer), or set QUILL_PG_BIN to the folder that holds initdb and pg_ctl")


class PostgresMissing(RuntimeError):
    pass


def server_bin() -> Path:
    """The folder with initdb and pg_ctl: QUILL_PG_BIN, the PATH, or Debian's /usr/lib/postgresql/N/bin."""
    candidates = [os.environ.get("QUILL_PG_BIN", "")]
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb")).resolve().parent))
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True)
    for folder in filter(None, candidates):
        if (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    raise PostgresMissing(INSTALL_HINT)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPostgres:
    USER = "quill"

    def __init__(self, durable: bool = False):
        self.durable = durable  # fsync as a real server does (benchmarks); off, tests run faster
        self.bin = server_bin()
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="quill-postgres-"))
        self.databases = 0
        self._as_server_user = []
        if os.geteuid() == 0:
            self._as_server_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.folder, "postgres")

    def _run(self, *command: str) -> None:
        done = subprocess.run([*self._as_server_user, *command], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> "LocalPostgres":
        data = self.folder / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", self.USER, "-A", "trust", "--no-sync",
                  "-E", "UTF8", "--locale=C")
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=200 "
                   f"-c fsync={'on' if self.durable else 'off'}")
        self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(self.folder / "log"),
                  "-w", "start")
        return self

    def stop(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """An empty database of its own, for one test or one benchmark run."""
        self.databases += 1
        name = f"quill_{self.databases}"
        self._run(str(self.bin / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.USER, name)
        return self.url(name)

    def __enter__(self) -> "LocalPostgres":
        try:
            return self.start()
        except BaseException:
            shutil.rmtree(self.folder, ignore_errors=True)
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
