"""A private, throw-away PostgreSQL server for tests that must restart PostgreSQL.

Never the shared server on 127.0.0.1:5432 (other test runs use it): this one
is ``initdb``-ed into a temporary directory, listens on a free port with its
unix socket in that directory, trusts local connections, and is removed at
the end.  As root, every PostgreSQL binary runs as the ``postgres`` user.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path


def find_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return found[0] if found else shutil.which(name)


class PrivatePostgres:
    def __init__(self, port: int):
        self.initdb, self.pg_ctl = find_bin("initdb"), find_bin("pg_ctl")
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="loom-pg-"))
        self.data, self.log = self.dir / "data", self.dir / "server.log"
        self._as = []
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    @property
    def available(self) -> bool:
        return bool(self.initdb and self.pg_ctl)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> str:
        res = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=timeout, cwd=self.dir)
        if res.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed: {res.stdout}{res.stderr}\n{log}")
        return res.stdout

    def start(self) -> "PrivatePostgres":
        self._run(self.initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8",
                  "--locale=C.UTF-8" if Path("/usr/lib/locale/C.utf8").exists() else "--locale=C")
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=on "
                f"-c max_connections=200 -c shared_buffers=32MB")
        self._run(self.pg_ctl, "-D", str(self.data), "-o", opts, "-l", str(self.log), "-w", "start")
        return self

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m fast``: sessions are terminated, in-flight transactions roll back."""
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-l", str(self.log), "-w", "restart")

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run([*self._as, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)
