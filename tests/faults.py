"""What the fault tests share: actor processes that can be SIGKILLed and restarted, a private
PostgreSQL server that can be stopped, and the ledger check (see fault_agents.py).

`./tasks.sh soak` runs tests/test_faults.py longer than CI does.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from processes import process_env, stop, up, wait_printed
from timestep.bus.server import free_port

ROLES = ("agent", "governor", "scheduler")


class Actors:
    """One `timestep up --role R` process per role, each under a fixed executor id, on one
    NATS server and one database. `kill(role)` SIGKILLs one; `start(role)` brings it back
    under the same id, so it recovers the runs it held."""

    def __init__(self, tmp: Path, db_url: str, nats_url: str, *, agents_module: str = "fault_agents", extra_env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.db_url = db_url
        self.nats_url = nats_url
        self.agents_module = agents_module
        self.ledger = tmp / "ledger.log"
        self.extra_env = extra_env or {}
        self.procs: dict[str, subprocess.Popen] = {}
        self.starts: Counter[str] = Counter()
        self.kills: Counter[str] = Counter()

    def env(self, role: str) -> dict[str, str]:
        env = process_env(
            "TIMESTEP_HTTP_PORT",
            NATS_URL=self.nats_url,
            TIMESTEP_HOME=str(self.tmp / "home"),
            TIMESTEP_DB_POOL_SIZE="6",  # many processes share the test server's 100 connections
            TIMESTEP_EXECUTOR_ID=f"{role}-1",
            TIMESTEP_LEDGER=str(self.ledger),
            TIMESTEP_QUEUE_POLL_SECONDS="0.05",
            # A killed actor's unacknowledged messages go to its successor after this long.
            TIMESTEP_ACK_WAIT="3",
        )
        if not self.db_url.startswith("sqlite"):
            env["PG_CONNECTION_URI"] = self.db_url
        env.update(self.extra_env)
        return env

    def start(self, *roles: str, timeout: float = 90) -> None:
        pending = []
        for role in roles:
            self.starts[role] += 1
            out = self.tmp / f"{role}-{self.starts[role]}.out"
            self.procs[role] = up(out, self.env(role), "--agents", self.agents_module, "--role", role)
            pending.append((self.procs[role], out))
        wait_printed(pending, timeout=timeout)

    def kill(self, *roles: str) -> None:
        for role in roles:
            proc = self.procs.pop(role)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            self.kills[role] += 1

    def stop_gracefully(self, *roles: str, sig: signal.Signals = signal.SIGTERM, timeout: float = 60) -> None:
        """Stop each role as a deploy does (SIGTERM, or SIGINT as Ctrl-C); it must exit by itself, with 0."""
        procs = [self.procs.pop(role) for role in roles]
        for proc in procs:
            proc.send_signal(sig)
        for role, proc in zip(roles, procs):
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(f"{role} did not stop within {timeout} s of {sig.name}\n{self.output()}") from None
            assert code == 0, f"{role} exited {code} after {sig.name}\n{self.output()}"
            self.kills[f"{role}:{sig.name}"] += 1

    def output(self, tail: int | None = 4000) -> str:
        """What the processes printed (the last `tail` characters of each; None: all of it)."""
        return "\n".join(f"--- {p.name}\n{p.read_text()[-(tail or 0):]}" for p in sorted(self.tmp.glob("*.out")))

    def stop(self) -> None:
        stop(self.procs.values())
        self.procs = {}


class PrivatePostgres:
    """A PostgreSQL server of our own (initdb in a temporary directory), so a test can stop it
    without touching the shared one. Runs as the `postgres` user when we are root."""

    def __init__(self) -> None:
        # Not under pytest's tmp_path: the `postgres` user cannot enter root's 0700 directories.
        self.root = Path(tempfile.mkdtemp(prefix="timestep-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run(prefix + list(args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:1])} failed ({done.returncode}): {done.stderr.decode(errors='replace')[-2000:]}")

    def init(self) -> PrivatePostgres:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self._run(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        return self

    def start(self) -> None:
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
            "-o", f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on",
            "start",
        )

    def stop(self, mode: str = "immediate") -> None:
        """`immediate`: like a crash (no shutdown checkpoint); the next start recovers from the WAL."""
        self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop("fast")
        except Exception:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise FileNotFoundError(f"{name} not found: install PostgreSQL's server binaries")


def postgres_binaries_problem() -> str | None:
    try:
        _pg_bin("initdb")
        _pg_bin("pg_ctl")
        return None
    except FileNotFoundError as exc:
        return str(exc)


@dataclass
class LedgerReport:
    """What the ledger says about every run's three steps."""

    runs: int = 0
    executions: int = 0
    repeated_after_recorded: list[str] = field(default_factory=list)
    """Steps that ran again after the execution the run kept: must be empty."""
    cut_off: int = 0
    """Executions killed mid-way (a start with no end) and run again: expected under SIGKILL."""
    finished_unrecorded: int = 0
    """Executions that finished but were killed before DBOS recorded them, and ran again."""
    missing: list[str] = field(default_factory=list)
    """Steps whose kept execution is not in the ledger: must be empty."""


def check_ledger(ledger: Path, outputs: dict[str, str]) -> LedgerReport:
    """`outputs`: run id -> final output `m0=<nonce> t=<nonce> m1=<nonce>` (what the run kept)."""
    lines: dict[tuple[str, str], list[tuple[str, str]]] = defaultdict(list)
    for line in ledger.read_text().splitlines():
        _kind, phase, run_id, step, nonce, _pid = line.split()
        lines[(run_id, step)].append((phase, nonce))
    report = LedgerReport(runs=len(outputs))
    for run_id, output in outputs.items():
        kept = dict(part.split("=", 1) for part in output.split())
        for step in ("m0", "t", "m1"):
            entries = lines.get((run_id, step), [])
            report.executions += sum(1 for phase, _ in entries if phase == "start")
            nonce = kept[step]
            if ("end", nonce) not in entries:
                report.missing.append(f"{run_id}/{step}")
                continue
            after = entries[entries.index(("end", nonce)) + 1 :]
            if any(phase == "start" for phase, _ in after):
                report.repeated_after_recorded.append(f"{run_id}/{step}")
            ended = {n for phase, n in entries if phase == "end"}
            for phase, other in entries:
                if phase == "start" and other != nonce:
                    if other in ended:
                        report.finished_unrecorded += 1
                    else:
                        report.cut_off += 1
    return report
