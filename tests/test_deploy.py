"""The deployment files are real: nats-server accepts every NATS config, compose and the Kubernetes
manifests parse and use only settings Timestep reads and roles and flags `timestep up` has, the
systemd units likewise; and a 3-node cluster started from deploy/nats replicates a stream 3 times."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from subjects.names import EVENTS_STREAM
from timestep.bus.connection import Bus
from timestep.bus.server import free_port, server_binary
from timestep.settings import NatsSettings, Settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
NATS_DIR = DEPLOY / "nats"
ROLES = ("agent", "governor", "scheduler")

#: Every environment variable Timestep reads (timestep/settings.py is the one place), plus the
#: OpenAI SDK's own, which the README lists.
SETTINGS = set(re.findall(r'"((?:NATS|TIMESTEP|PG|OPENAI)_[A-Z0-9_]+)"', (ROOT / "timestep" / "settings.py").read_text()))
ALLOWED_ENV = SETTINGS | {"OPENAI_BASE_URL"}


def nats_variables() -> set[str]:
    """The `$VARIABLE`s the NATS configs take from the environment."""
    found = set()
    for conf in NATS_DIR.glob("*.conf"):
        text = "\n".join(line.split("#")[0] for line in conf.read_text().splitlines())
        text = re.sub(r'"[^"]*"', "", text)  # subjects such as "$JS.API.>" are not variables
        found |= set(re.findall(r"\$([A-Z][A-Z0-9_]*)\b", text))
    defined = set(re.findall(r"^([A-Z][A-Z0-9_]*)\s*:", (NATS_DIR / "permissions.conf").read_text(), re.MULTILINE))
    return found - defined


def nats_env(**override: str) -> dict[str, str]:
    env = {name: f"test-{name.lower()}" for name in nats_variables()}
    env["NATS_ROUTES"] = "[nats://route:x@nats-0:6222, nats://route:x@nats-1:6222, nats://route:x@nats-2:6222]"
    return {**env, **override}


def up_options() -> tuple[set[str], set[str]]:
    """The flags and roles `timestep up --help` lists."""
    text = subprocess.run([sys.executable, "-m", "actors.cli.main", "up", "--help"], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    flags = set(re.findall(r"(--[a-z][a-z-]*)", text))
    roles = set(re.search(r"--role \{([a-z,]+)\}", text).group(1).split(","))
    return flags, roles


@pytest.fixture(scope="module")
def up() -> tuple[set[str], set[str]]:
    return up_options()


def check_up_command(args: list[str], up: tuple[set[str], set[str]], where: str) -> str:
    """`up --role R --agents M` with only existing flags; returns the role."""
    flags, roles = up
    assert args[0] == "up", f"{where}: {args}"
    used = [a for a in args if a.startswith("--")]
    assert set(used) <= flags, f"{where}: unknown flags {set(used) - flags}"
    assert used.count("--role") == 1, f"{where}: one role per process"
    role = args[args.index("--role") + 1]
    assert role in roles, f"{where}: unknown role {role!r}"
    assert "--agents" in used, f"{where}: every role imports the agent modules"
    return role


# --- NATS --------------------------------------------------------------------------------


def test_nats_server_accepts_the_cluster_config(tmp_path: Path) -> None:
    result = subprocess.run([server_binary(), "-t", "-c", str(NATS_DIR / "nats.conf")], env=nats_env(), capture_output=True, text=True)
    assert result.returncode == 0 and "is valid" in result.stdout + result.stderr, result.stdout + result.stderr
    # Without a password in the environment it is refused, naming the variable.
    env = nats_env()
    del env["NATS_CLIENT_PASSWORD"]
    result = subprocess.run([server_binary(), "-t", "-c", str(NATS_DIR / "nats.conf")], env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "NATS_CLIENT_PASSWORD" in result.stdout + result.stderr


def test_the_nats_configs_take_no_secret_from_the_files() -> None:
    text = "\n".join(p.read_text() for p in NATS_DIR.glob("*.conf"))
    assert not re.search(r"password\s*:\s*[^$\s]", text), "a password written in a NATS config"
    assert {"NATS_SERVER_NAME", "NATS_ROUTES", "NATS_ROUTE_PASSWORD", "NATS_AGENT_PASSWORD", "NATS_CLIENT_PASSWORD"} <= nats_variables()


# --- compose ------------------------------------------------------------------------------


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.mark.processes
def test_compose_services_use_real_settings_roles_and_flags(up) -> None:
    services = compose()["services"]
    nats_nodes = [name for name, s in services.items() if str(s.get("image", "")).startswith("nats:")]
    assert len(nats_nodes) == 3
    for name in nats_nodes:
        env = services[name]["environment"]
        assert nats_variables() <= set(env), f"{name} lacks {nats_variables() - set(env)}"
        assert all(f"@{node}:6222" in env["NATS_ROUTES"] for node in nats_nodes)
        assert services[name]["healthcheck"] and services[name]["stop_grace_period"]

    actors = {name: s for name, s in services.items() if s.get("build")}
    roles, executor_ids = {}, []
    for name, service in actors.items():
        env = {k: str(v) for k, v in service["environment"].items()}
        assert set(env) <= ALLOWED_ENV, f"{name}: {set(env) - ALLOWED_ENV} are not Timestep settings"
        role = check_up_command(service["command"], up, name)
        roles[name] = role
        assert env["NATS_USER"] == role and env["NATS_PASSWORD"] == f"${{NATS_{role.upper()}_PASSWORD}}"
        assert env["NATS_URL"] == ",".join(f"nats://{node}:4222" for node in nats_nodes)
        assert env["TIMESTEP_STREAM_REPLICAS"] == "3"
        assert env["PG_CONNECTION_URI"].startswith("postgresql://")
        assert env["TIMESTEP_APP_VERSION"] and env["TIMESTEP_HTTP_HOST"] == "0.0.0.0" and env["TIMESTEP_HTTP_PORT"] == "9090"
        executor_ids.append(env["TIMESTEP_EXECUTOR_ID"])
        assert "/readyz" in " ".join(service["healthcheck"]["test"]) and ":9090/" in " ".join(service["healthcheck"]["test"])
        assert service["stop_signal"] == "SIGTERM" and service["stop_grace_period"]
        assert {"postgres", *nats_nodes} <= set(service["depends_on"])
    assert sorted(set(roles.values())) == sorted(ROLES)
    assert len(executor_ids) == len(set(executor_ids)), "two services share an executor id"
    assert "OPENAI_API_KEY" not in str(services) or all(
        "OPENAI_API_KEY" not in s["environment"] for n, s in actors.items() if roles[n] != "agent"
    ), "only agent actors need the model key"


def test_dockerfile_installs_the_project_with_pip() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^RUN pip install \.$", text, re.MULTILINE)
    assert '"timestep"' in re.search(r"^ENTRYPOINT (.*)$", text, re.MULTILINE).group(1)
    for path in re.findall(r"^COPY (\S+) ", text, re.MULTILINE):
        assert (ROOT / path).exists(), f"Dockerfile copies {path}, which is not in the repository"
    build = compose()["services"]["agent-0"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()


# --- Kubernetes ----------------------------------------------------------------------------


def manifests() -> list[dict]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d and d["kind"] != "Kustomization"]
    return docs


@pytest.mark.processes
def test_kubernetes_manifests(up) -> None:
    docs = manifests()
    by_kind = {}
    for d in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(d), d
        by_kind.setdefault(d["kind"], []).append(d)
    secrets = {(s["metadata"]["name"], key) for s in by_kind["Secret"] for key in s["stringData"]}
    config = {c["metadata"]["name"]: c["data"] for c in by_kind["ConfigMap"]}
    sets = {s["metadata"]["name"]: s for s in by_kind["StatefulSet"]}
    services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
    kustomized = yaml.safe_load((DEPLOY / "k8s" / "kustomization.yaml").read_text())["resources"]
    assert all((DEPLOY / "k8s" / name).exists() for name in kustomized)

    nats = sets["nats"]
    assert nats["spec"]["replicas"] == 3 and services[nats["spec"]["serviceName"]]["spec"]["clusterIP"] == "None"
    assert nats["spec"]["volumeClaimTemplates"]
    nats_env = {e["name"]: e for e in nats["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert nats_variables() <= set(nats_env)
    assert nats_env["NATS_SERVER_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"

    actors = {name: s for name, s in sets.items() if name.startswith("timestep-")}
    assert sorted(actors) == [f"timestep-{role}" for role in sorted(ROLES)]
    for name, workload in [*sets.items()]:
        pod = workload["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] >= 30, name
        for container in pod["containers"]:
            assert container["resources"]["requests"], name
            for e in container.get("env", []):
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    assert (ref["name"], ref["key"]) in secrets, f"{name}: no Secret {ref['name']}/{ref['key']}"
    for name, workload in actors.items():
        container = workload["spec"]["template"]["spec"]["containers"][0]
        role = check_up_command(container["args"], up, name)
        assert name == f"timestep-{role}"
        env = {e["name"]: e for e in container["env"]}
        from_config = {k for ref in container.get("envFrom", []) for k in config[ref["configMapRef"]["name"]]}
        assert set(env) | from_config <= ALLOWED_ENV, f"{name}: {(set(env) | from_config) - ALLOWED_ENV}"
        # The executor id is the pod name: a restarted pod recovers its own runs.
        assert env["TIMESTEP_EXECUTOR_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["NATS_USER"]["value"] == role
        assert env["NATS_PASSWORD"]["valueFrom"]["secretKeyRef"]["key"] == f"{role}-password"
        merged = {**config["timestep-config"]}
        assert merged["TIMESTEP_STREAM_REPLICAS"] == "3" and merged["TIMESTEP_HTTP_HOST"] == "0.0.0.0"
        assert merged["NATS_URL"] == ",".join(f"nats://nats-{i}.nats:4222" for i in range(3))
        port = int(merged["TIMESTEP_HTTP_PORT"])
        assert {p["name"]: p["containerPort"] for p in container["ports"]}["http"] == port
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


# --- systemd --------------------------------------------------------------------------------


def unit(path: Path) -> dict[str, list[str]]:
    """Key -> values of a unit file (systemd allows repeated keys)."""
    values: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.mark.processes
def test_systemd_units(up) -> None:
    for role in ROLES:
        values = unit(DEPLOY / "systemd" / f"timestep-{role}@.service")
        assert values["Restart"] == ["always"] and values["KillSignal"] == ["SIGTERM"]
        assert int(values["TimeoutStopSec"][0]) >= 30
        env = dict(v.split("=", 1) for v in values["Environment"])
        assert set(env) <= ALLOWED_ENV
        assert env["TIMESTEP_EXECUTOR_ID"] == f"{role}-%i"
        exec_start = shlex.split(values["ExecStart"][0])
        assert exec_start[0].endswith("/timestep")
        assert check_up_command(exec_start[1:], up, f"timestep-{role}@.service") == role
    for example in (DEPLOY / "systemd").glob("*.env.example"):
        names = {line.split("=", 1)[0] for line in example.read_text().splitlines() if "=" in line and not line.startswith("#")}
        assert names <= ALLOWED_ENV, f"{example.name}: {names - ALLOWED_ENV}"


# --- the cluster, for real -----------------------------------------------------------------------


@pytest.mark.processes
async def test_three_node_cluster_from_the_config_replicates_streams(tmp_path: Path) -> None:
    """Three nats-servers from deploy/nats/nats.conf on loopback (its addresses, store and pid file
    substituted), the actors' streams created with TIMESTEP_STREAM_REPLICAS=3 by the agent user."""
    procs: list[subprocess.Popen] = []
    try:
        for attempt in range(3):  # a port picked free can be taken before the server binds it: pick again
            ports = [(free_port(), free_port(), free_port()) for _ in range(3)]
            procs = _start_cluster(tmp_path / f"try{attempt}", ports)
            await asyncio.sleep(1.0)
            if all(proc.poll() is None for proc in procs):
                break
            _stop_all(procs)
        else:
            raise AssertionError("three tries at starting the cluster all met a port in use")
        url = ",".join(f"nats://127.0.0.1:{client}" for client, _, _ in ports)
        base = Settings.from_env()
        none = {f.name: None for f in dataclasses.fields(NatsSettings) if f.name != "connect_deadline"}
        settings = dataclasses.replace(
            base, stream_replicas=3,
            nats=NatsSettings(**{**none, "url": url, "user": "agent", "password": "agent-pw", "connect_deadline": 15.0}),
        )
        bus = await Bus.connect(settings=settings)
        try:
            deadline = time.monotonic() + 30
            while True:  # JetStream needs its meta leader: until then stream creation fails
                try:
                    await bus.ensure_streams()
                    info = await bus.js.stream_info(EVENTS_STREAM)
                    if info.cluster and info.cluster.leader and len(info.cluster.replicas or []) == 2:
                        break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                assert time.monotonic() < deadline, "the cluster did not form"
                await asyncio.sleep(0.5)
            assert info.config.num_replicas == 3
            assert info.cluster.name == "timestep"
            assert {info.cluster.leader, *(r.name for r in info.cluster.replicas)} == {"n0", "n1", "n2"}
            ack = await bus.js.publish(bus.subjects.events(f"r-{uuid.uuid4().hex[:8]}", "started"), b"{}")
            assert ack.stream == EVENTS_STREAM
        finally:
            await bus.close()
    finally:
        _stop_all(procs)


def _start_cluster(where: Path, ports: list[tuple[int, int, int]]) -> list[subprocess.Popen]:
    """The three nodes of deploy/nats/nats.conf on these (client, cluster, http) ports, under `where`."""
    routes = "[" + ", ".join(f"nats://route:route-pw@127.0.0.1:{cluster}" for _, cluster, _ in ports) + "]"
    procs = []
    for i, (client, cluster, http) in enumerate(ports):
        node = where / f"n{i}"
        shutil.copytree(NATS_DIR, node)
        conf = (NATS_DIR / "nats.conf").read_text()
        for old, new in (
            ("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{client}"), ("http: 0.0.0.0:8222", f"http: 127.0.0.1:{http}"),
            ("listen: 0.0.0.0:6222", f"listen: 127.0.0.1:{cluster}"), ("/data/jetstream", str(node / "jetstream")),
            ("/tmp/nats-server.pid", str(node / "nats-server.pid")),
        ):
            assert conf.count(old) == 1, old
            conf = conf.replace(old, new)
        (node / "nats.conf").write_text(conf)
        env = nats_env(NATS_SERVER_NAME=f"n{i}", NATS_ROUTES=routes, NATS_ROUTE_PASSWORD="route-pw", NATS_AGENT_PASSWORD="agent-pw")
        log = (where / f"n{i}.log").open("w")
        procs.append(subprocess.Popen([server_binary(), "-c", str(node / "nats.conf")], env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def _stop_all(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
