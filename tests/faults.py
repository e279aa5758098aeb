"""What the fault tests share besides their processes (tests/processes.py, `Deployment`): a private
PostgreSQL server that can be stopped, and the ledger check (see fault_agents.py).

`./tasks.sh soak` runs tests/test_faults.py longer than CI does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from timestep.bus.server import free_port

ROLES = ("agent", "governor", "scheduler")


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
