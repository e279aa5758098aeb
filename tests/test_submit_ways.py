"""The three ways a plain NATS program submits a run, against real `timestep up` processes, with
nats-py calls and no Timestep code on the sending side: a JetStream publish (PubAck, or an error
with the governor's reason), a core request (the `accepted` or `rejected` event), a core publish."""

from __future__ import annotations

import json

import nats
import nats.errors
import pytest
from nats.js.errors import BadRequestError

from subjects.events import Accepted, Completed, decode_event
from processes import Deployment
from test_bus_processes import AGENT, cluster, tool_calls, uid  # noqa: F401 (cluster: the fixture)
from timestep.client import Client, Submission

pytestmark = pytest.mark.processes

SUBMIT = "timestep.runs.submit"


def body(run_id: str | None, agent: str = AGENT, input: str = "hello") -> bytes:
    return json.dumps({"agent": agent, "input": input} | ({"id": run_id} if run_id else {})).encode()


async def completed(client: Client, run_id: str) -> Completed:
    return await Submission(client, run_id, None).result(timeout=60)


async def test_jetstream_publish_core_request_and_core_publish(cluster: Deployment) -> None:
    cluster.start(("agent+governor+scheduler", "node-1"))
    nc = await nats.connect(cluster.nats_url)
    js = nc.jetstream()
    try:
        async with await Client.connect(cluster.nats_url) as client:
            # A JetStream publish: a PubAck once stored, `duplicate` for a repeat, one run.
            run_id, city = uid("js"), uid("Lima")
            data = body(run_id, input=f"get_weather city={city}")
            ack = await js.publish(SUBMIT, data, headers={"Nats-Msg-Id": run_id}, timeout=10)
            assert (ack.stream, ack.seq, ack.duplicate) == ("TIMESTEP_SUBMIT", 1, None)
            again = await js.publish(SUBMIT, data, headers={"Nats-Msg-Id": run_id}, timeout=10)
            assert (again.stream, again.duplicate) == ("TIMESTEP_SUBMIT", True)
            assert (await completed(client, run_id)).output == f"get_weather returned: sunny in {city}"
            assert tool_calls(cluster).count(f"get_weather:{city}") == 1

            # A refused one raises with the governor's reason.
            ghost = uid("ghost")
            with pytest.raises(BadRequestError) as refused:
                await js.publish(SUBMIT, body(uid("js"), agent=ghost), timeout=10)
            assert refused.value.code == 400
            assert refused.value.description.startswith(f"agent: no agent named '{ghost}'")
            with pytest.raises(BadRequestError) as malformed:
                await js.publish(SUBMIT, b'{"agent": "x"', timeout=10)
            assert "request" in malformed.value.description or "JSON" in malformed.value.description

            # A core request: the run's `accepted` or `rejected` event.
            run_id = uid("req")
            answer = decode_event((await nc.request(SUBMIT, body(run_id), timeout=10)).data)
            assert isinstance(answer, Accepted) and answer.type == "accepted" and answer.run_id == run_id
            rejected = json.loads((await nc.request(SUBMIT, body(uid("req"), agent=ghost), timeout=10)).data)
            assert rejected["type"] == "rejected"
            assert rejected["error"]["description"].startswith(f"agent: no agent named '{ghost}'")
            await completed(client, run_id)

            # A core publish: no answer, stored and run.
            run_id = uid("pub")
            await nc.publish(SUBMIT, body(run_id), headers={"Nats-Msg-Id": run_id})
            events = [event.type async for event in client.events(run_id)]
            assert events[0] == "accepted" and events[-1] == "completed"
    finally:
        await nc.close()


async def test_a_jetstream_publish_while_no_governor_runs_is_stored_and_run_once(cluster: Deployment) -> None:
    cluster.start(("agent", "node-1"))
    nc = await nats.connect(cluster.nats_url)
    js = nc.jetstream()
    run_id, city = uid("later"), uid("Quito")
    data = body(run_id, input=f"get_weather city={city}")
    try:
        # Nobody answers (the stream is no_ack), but the request is stored.
        with pytest.raises(nats.errors.TimeoutError):
            await js.publish(SUBMIT, data, headers={"Nats-Msg-Id": run_id}, timeout=1)
        info = await js.stream_info("TIMESTEP_SUBMIT")
        assert info.state.messages == 1
        cluster.start(("governor", "node-2"))
        async with await Client.connect(cluster.nats_url) as client:
            assert (await completed(client, run_id)).output == f"get_weather returned: sunny in {city}"
            # The usual retry after a timeout, same Nats-Msg-Id: answered as the repeat it is.
            again = await js.publish(SUBMIT, data, headers={"Nats-Msg-Id": run_id}, timeout=10)
            assert (again.stream, again.duplicate) == ("TIMESTEP_SUBMIT", True)
            assert [e.type async for e in client.events(run_id)].count("accepted") == 1
        assert tool_calls(cluster).count(f"get_weather:{city}") == 1
    finally:
        await nc.close()
