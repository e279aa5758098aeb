"""The caller's own Agents SDK session objects, as the SDK's docs write them: each run's turn goes to
the session the caller gave, also in a process that recovers the run (the SIGKILL variants are in
tests/test_sdk_crash.py); a session nothing could make again is refused before the run starts; the
seed's example, `OpenAIConversationsSession()`, against a local server that speaks the Conversations
and Responses APIs through the real openai client."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from agents import Agent, OpenAIConversationsSession, SQLiteSession
from agents.testing import ScriptedModel, assistant_message

import timestep
from timestep.durable import runs


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class SessionOfList:
    """A session of the caller's own kind (a list in memory, shared by id, as a store would be)."""

    stores: dict[str, list[Any]] = {}

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        self.items = SessionOfList.stores.setdefault(session_id, [])

    async def get_items(self, limit: int | None = None) -> list[Any]:
        return list(self.items if limit is None else self.items[-limit:])

    async def add_items(self, items: list[Any]) -> None:
        self.items.extend(items)

    async def pop_item(self) -> Any:
        return self.items.pop() if self.items else None

    async def clear_session(self) -> None:
        self.items.clear()


def echo_agent() -> Agent:
    return Agent(name=uid("sessions"), model=ScriptedModel([[assistant_message("noted")], [assistant_message("again")]]))


async def test_a_session_nothing_could_make_again_is_refused_before_the_run_starts(db: str) -> None:
    class NotesSession(SessionOfList):  # a kind no factory was registered for
        pass

    agent = echo_agent()
    run_id = uid("refused")
    with pytest.raises(timestep.ValidationError) as refused:
        await timestep.run_agent_workflow(agent, "hi", NotesSession(uid("notes")), workflow_id=run_id)
    assert refused.value.field == "session"
    assert "register_session_factory(NotesSession, lambda session_id: NotesSession(session_id, ...))" in str(refused.value)
    with pytest.raises(timestep.ValidationError, match="^session: is an SQLiteSession in memory") as refused:
        await timestep.run_agent_workflow(agent, "hi", SQLiteSession(uid("mem")))
    assert "SQLiteSession(session_id, 'conversations.db')" in str(refused.value)
    with pytest.raises(timestep.ValidationError, match="^session: dict is not an Agents SDK session"):
        await timestep.run_agent_workflow(agent, "hi", {"session_id": "x"})
    assert await runs.run_state(run_id) is None  # nothing was written


async def test_a_registered_factory_makes_the_session_where_the_object_is_gone(db: str) -> None:
    """With `register_session_factory`, a session of the caller's class is accepted, and a run that
    goes on without the object at hand (as a recovered run does) writes the rest of its turn to the
    session the factory makes, not to Timestep's database session of the same id."""
    class ListSession(SessionOfList):
        pass

    timestep.register_session_factory(ListSession, ListSession)
    agent = echo_agent()
    session = ListSession(uid("list"))
    result = await timestep.run_agent_workflow(agent, "remember this", session)
    assert result.output == "noted"
    assert [i.get("role") for i in session.items] == ["user", "assistant"]

    run_id = uid("gone")
    spec, _, _ = runs._prepare(
        agent, "and this", session.session_id, False, run_id, None, 10, session_recipe=timestep.durable.sessions.recipe(session, agent.name),
    )  # the run as another process finds it: no live object
    runs._sessions.pop(session.session_id, None)
    made = runs._session_for(spec)
    assert isinstance(made, ListSession) and made.items is session.items
    assert await timestep.DatabaseSession(session.session_id).get_items() == []


async def test_an_sqlite_session_file_is_found_again_by_its_path(db: str, tmp_path: Path) -> None:
    agent = echo_agent()
    session = SQLiteSession(uid("sdk"), tmp_path / "conversations.db")
    await timestep.run_agent_workflow(agent, "remember this", session)
    spec, _, _ = runs._prepare(
        agent, "x", session.session_id, False, uid("run"), None, 10, session_recipe=timestep.durable.sessions.recipe(session, agent.name),
    )
    runs._sessions.pop(session.session_id, None)
    made = runs._session_for(spec)
    assert isinstance(made, SQLiteSession) and Path(made.db_path) == (tmp_path / "conversations.db").resolve()
    assert [i.get("role") for i in await made.get_items()] == ["user", "assistant"]


async def test_an_agents_session_factory_takes_its_session_ids(db: str, tmp_path: Path) -> None:
    """`register_agent(agent, session_factory=...)`: a run given a session id string (as a request
    on the bus gives one) keeps its conversation in the session the factory makes."""
    path = tmp_path / "agent-sessions.db"
    agent = timestep.register_agent(echo_agent(), session_factory=lambda session_id: SQLiteSession(session_id, path))
    session_id = uid("user")
    await timestep.run_agent_workflow(agent, "first", session_id)
    second = await timestep.run_agent_workflow(agent, "second", session_id)
    assert second.output == "again"
    texts = [i["content"] if isinstance(i["content"], str) else i["content"][0]["text"] for i in await SQLiteSession(session_id, path).get_items()]
    assert texts == ["first", "noted", "second", "again"]
    assert await timestep.DatabaseSession(session_id).get_items() == []
    with pytest.raises(timestep.ValidationError, match="^session_factory: "):
        timestep.register_agent(echo_agent(), session_factory="sqlite")


# --- the seed's example: OpenAIConversationsSession over HTTP ------------------------------------


class OpenAIServer:
    """The Conversations API (create, items list/create/delete, delete) and the Responses API (one
    scripted answer per request, each request's input kept), as the real openai client calls them."""

    def __init__(self, answers: list[str]) -> None:
        self.conversations: dict[str, list[dict]] = {}
        self.inputs: list[list[dict]] = []
        self.answers = list(answers)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, body: dict, status: int = 200) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> dict:
                return json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")

            def do_POST(self) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                body = self._body()
                if parts == ["v1", "conversations"]:
                    cid = f"conv_{uuid.uuid4().hex[:12]}"
                    server.conversations[cid] = [server.stored(i) for i in body.get("items") or []]
                    return self._send({"id": cid, "object": "conversation", "created_at": 0, "metadata": {}})
                if parts[:2] == ["v1", "conversations"] and parts[3:] == ["items"]:
                    added = [server.stored(i) for i in body["items"]]
                    server.conversations[parts[2]].extend(added)
                    return self._send(server.page(added))
                if parts == ["v1", "responses"]:
                    server.inputs.append(body["input"])
                    words = server.answers.pop(0)
                    item = {"type": "message", "id": f"msg_{uuid.uuid4().hex[:8]}", "role": "assistant", "status": "completed",
                            "content": [{"type": "output_text", "text": words, "annotations": []}]}
                    usage = {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5,
                             "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}}
                    return self._send({"id": f"resp_{uuid.uuid4().hex[:8]}", "object": "response", "created_at": 0, "model": body["model"],
                                       "status": "completed", "output": [item], "parallel_tool_calls": True, "tool_choice": "auto",
                                       "tools": [], "usage": usage})
                self._send({"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}}, 404)

            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                parts = path.strip("/").split("/")
                items = list(server.conversations[parts[2]])
                if "order=desc" in query:
                    items.reverse()
                self._send(server.page(items))

            def do_DELETE(self) -> None:
                parts = self.path.split("?")[0].strip("/").split("/")
                if len(parts) == 5:
                    server.conversations[parts[2]] = [i for i in server.conversations[parts[2]] if i["id"] != parts[4]]
                    return self._send({"id": parts[2], "object": "conversation", "created_at": 0, "metadata": {}})
                server.conversations.pop(parts[2], None)
                self._send({"id": parts[2], "object": "conversation.deleted", "deleted": True})

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @staticmethod
    def stored(item: dict) -> dict:
        """An item as the Conversations API keeps it: with an id and a status, a message's text as content parts."""
        item = {"type": "message", **item, "id": item.get("id") or f"item_{uuid.uuid4().hex[:8]}"}
        if item["type"] == "message":
            kind = "output_text" if item["role"] == "assistant" else "input_text"
            content = item["content"]
            item["content"] = [{"type": kind, "text": content}] if isinstance(content, str) else content
            item.setdefault("status", "completed")
        return item

    @staticmethod
    def page(items: list[dict]) -> dict:
        return {"object": "list", "data": items, "first_id": items[0]["id"] if items else None,
                "last_id": items[-1]["id"] if items else None, "has_more": False}


def texts(items: list[dict]) -> list[str]:
    return [part["text"] if isinstance(part, dict) else part for i in items if i.get("type", "message") == "message"
            for part in (i["content"] if isinstance(i["content"], list) else [i["content"]])]


async def test_the_seeds_openai_conversations_session_example(db: str, env) -> None:
    """As the guide writes it: `session = OpenAIConversationsSession()` (its conversation is made on
    first use), a model by name, input items; the conversation holds both turns and the second model
    call is given the first turn's history."""
    server = OpenAIServer(["Hi! How can I help?", "You said hello."])
    env.set("OPENAI_API_KEY", "sk-test")
    env.set("OPENAI_BASE_URL", server.url)
    agent = Agent(name=uid("assistant"), model="gpt-4.1")
    session = OpenAIConversationsSession()
    input_items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hello!"}]}]
    result = await timestep.run_agent_workflow(agent=agent, input_items=input_items, session=session, stream=False, workflow_id=uid("my-workflow"))
    assert result.output == "Hi! How can I help?"
    [conversation] = server.conversations
    assert session.session_id == conversation
    assert texts(server.conversations[conversation]) == ["Hello!", "Hi! How can I help?"]

    again = await timestep.run_agent_workflow(agent, "What did I say?", session)
    assert again.output == "You said hello."
    assert texts(server.inputs[1]) == ["Hello!", "Hi! How can I help?", "What did I say?"]
    assert texts(server.conversations[conversation]) == ["Hello!", "Hi! How can I help?", "What did I say?", "You said hello."]
    # Made again from its conversation id alone, as a recovering process makes it.
    made = timestep.durable.sessions.make(conversation, agent.name, {"kind": "openai_conversations"})
    assert texts(await made.get_items()) == texts(server.conversations[conversation])


async def test_a_schedules_ticks_write_to_the_session_object_it_was_given(db: str, tmp_path: Path) -> None:
    """create_scheduled_agent_workflow(..., session=SQLiteSession(id, file)): each tick's run keeps
    its turn in that file, not in Timestep's database session of the same id."""
    agent = Agent(name=uid("ticking"), model=ScriptedModel([[assistant_message("tick")] for _ in range(50)]))
    path, session_id = tmp_path / "ticks.db", uid("ticks")
    name = await timestep.create_scheduled_agent_workflow("* * * * * *", agent, "tick", SQLiteSession(session_id, path), name=uid("ticks"))
    try:
        items: list = []
        for _ in range(300):
            items = await SQLiteSession(session_id, path).get_items()
            if len(items) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        await timestep.delete_schedule(name)
    assert [i.get("role") for i in items[:2]] == ["user", "assistant"]
    assert await timestep.DatabaseSession(session_id).get_items() == []
