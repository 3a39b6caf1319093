"""Several uvicorn workers forked from one process that built the snapshot: models shared, not copied.

Python renders one email at a time per process, so a second core needs a second process. Each
worker would otherwise build its own snapshot (seconds of work and hundreds of MB each); here the
master builds it once, freezes it out of the garbage collector's sight (`ServiceState.install`)
and forks the workers, which share its pages copy-on-write. Each worker accepts on a socket of
its own, all bound to the port with SO_REUSEPORT, so the kernel spreads the connections evenly
(on one shared socket, the first worker to wake took all 32 connections of a benchmark and the
other idled). The sockets have TCP_NODELAY: without it, small answers on a socket passed to
uvicorn wait for delayed ACKs (about 40 ms each, the ten-times-slower "two workers" of
PERFORMANCE.md). The master keeps every socket open, so a replaced worker loses no connection.

- Events: a worker taking `/v1/events` applies them at once; the others notice the event store
  changed (a stat of its files on each request) and catch up before answering.
- Reloads: the master watches the champions (and takes SIGHUP, which `/v1/reload` sends it),
  builds the new snapshot while the old workers serve, then forks new workers and stops the old
  ones gracefully. A worker that dies is replaced.
- SIGTERM or SIGINT stops the workers and the master; a worker dies with its master (SIGKILL
  included, through PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette

from personalizer.api.app import RELOAD_ENV, champions_changed, create_app
from personalizer.config import Settings
from personalizer.decisions.decider import die_with_parent

log = logging.getLogger(__name__)


def listen(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening socket sharing `port` (SO_REUSEPORT); accepted connections inherit TCP_NODELAY."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


@dataclass
class Master:
    """Builds snapshots and keeps `workers` worker processes serving the current one."""

    settings: Settings
    host: str
    port: int
    workers: int
    batch_helper: bool = False
    app: Starlette | None = None
    pids: dict[int, tuple[int, int]] = field(default_factory=dict)  # pid → generation, slot
    socks: list[socket.socket] = field(default_factory=list)  # one a worker slot
    generation: int = 0
    stopping: bool = False
    reload_requested: bool = False

    def run(self) -> None:
        """Build, fork, and supervise until SIGTERM or SIGINT."""
        self.app = self._build()
        self.socks = [listen(self.host, self.port) for _ in range(self.workers)]
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, self._reload)
        self._fork_all()
        seconds = float(os.environ.get(RELOAD_ENV, "60") or 0)
        checked = time.monotonic()
        try:
            while not self.stopping:
                time.sleep(0.2)
                self._reap()
                due = seconds > 0 and time.monotonic() - checked >= seconds
                if due:
                    checked = time.monotonic()
                if self.reload_requested or (due and champions_changed(self._state())):
                    self.reload_requested = False
                    self._replace()
        finally:
            self._terminate(list(self.pids))
            for sock in self.socks:
                sock.close()

    def _state(self) -> Any:
        assert self.app is not None
        return self.app.state.service

    def _build(self) -> Starlette:
        app = create_app(self.settings, load="later")
        state = app.state.service
        state.load()
        state.shared_store = True  # other workers write events too: follow the store's files
        state.reload_hook = self._ask_reload
        return app

    def _ask_reload(self) -> None:  # runs in a worker: the master does the work
        os.kill(self._master_pid, signal.SIGHUP)

    def _fork_all(self) -> None:
        self._master_pid = os.getpid()
        for slot in range(self.workers):
            self._fork(slot)

    def _fork(self, slot: int) -> None:
        assert self.app is not None
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                for i, other in enumerate(self.socks):
                    if i != slot:
                        other.close()
                _work(self.app, self.socks[slot], self.batch_helper)
            except BaseException:  # a worker never returns into the master's loop
                log.exception("worker failed")
                code = 1
            finally:
                os._exit(code)
        self.pids[pid] = (self.generation, slot)

    def _reap(self) -> None:
        while self.pids:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            generation, slot = self.pids.pop(pid, (-1, -1))
            if generation == self.generation and not self.stopping:
                log.warning("worker %d ended (status %d): starting another", pid, status)
                self._fork(slot)

    def _replace(self) -> None:
        old_app, old = self.app, list(self.pids)
        try:
            app = self._build()
        except Exception:
            log.exception("reload failed: still serving the previous snapshot")
            return
        if app.state.service.decider is None:
            log.error(
                "reload failed (%s): still serving the previous snapshot",
                app.state.service.load_error,
            )
            return
        self.app, self.generation = app, self.generation + 1
        self._fork_all()
        self._terminate(old, wait=False)
        del old_app

    def _terminate(self, pids: list[int], wait: bool = True) -> None:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                self.pids.pop(pid, None)
        deadline = time.monotonic() + 20
        while wait and any(p in self.pids for p in pids) and time.monotonic() < deadline:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                time.sleep(0.05)
            self.pids.pop(pid, None)

    def _stop(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def _reload(self, signum: int, frame: Any) -> None:
        self.reload_requested = True


def _work(app: Starlette, sock: socket.socket, batch_helper: bool) -> None:
    """A worker: uvicorn on the shared socket, serving the snapshot forked with it."""
    import uvicorn

    die_with_parent(signal.SIGTERM)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)  # uvicorn installs its own when it starts
    threading.current_thread().name = f"worker-{os.getpid()}"
    if batch_helper:
        app.state.service.start_helper()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def serve_workers(
    settings: Settings, host: str, port: int, workers: int, batch_helper: bool = False
) -> None:
    """Serve the decision app on `workers` processes sharing one snapshot (see the module)."""
    Master(settings, host, port, workers, batch_helper).run()
