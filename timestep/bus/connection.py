"""The one place Timestep talks to NATS: connecting, the JetStream streams of the contract,
publishing events and dead letters, and durable pull consumers."""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import (
    BadSubscriptionError,
    ConnectionClosedError,
    ConnectionDrainingError,
    ConnectionReconnectingError,
    NoRespondersError,
    OutboundBufferLimitError,
    StaleConnectionError,
    TimeoutError as NatsTimeout,
)
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import APIError, BadRequestError, KeyNotFoundError, NoStreamResponseError, NotFoundError, ServiceUnavailableError

from subjects.events import ErrorInfo, LiveText, RunEvent, encode_event
from subjects.messages import DeadLetter
from subjects.names import CONTROL_STREAM, DEAD_STREAM, EVENTS_STREAM, SUBMIT_STREAM, WORK_STREAM, Subjects
from timestep.ops import metrics, observe
from timestep.errors import NatsUnreachableError, PermissionDeniedError, error_info
from timestep.settings import NatsSettings, Settings
from timestep.settings import current as current_settings

#: A message as the actors receive it (nats-py's), and the error of a pull that found nothing:
#: named here so that no module but this one imports nats-py.
Message = Msg
PullTimeout = NatsTimeout

log = logging.getLogger("timestep.bus.connection")

JSON_HEADERS = {"Content-Type": "application/json"}
DEAD_DATA_LIMIT = 64 * 1024
#: Transient errors: retried until they pass (the server restarts, a leader is elected).
TRANSIENT = (
    NatsTimeout, NoRespondersError, ConnectionClosedError, ConnectionReconnectingError, OutboundBufferLimitError,
    NoStreamResponseError, ServiceUnavailableError,  # a replicated stream between leaders
    asyncio.TimeoutError, OSError,
)
#: How long start-up calls (streams, the agents bucket) retry transient errors before giving up.
STARTUP_RETRY_SECONDS = 60.0
#: How long a client's first connection keeps trying while every attempt is refused (nothing listens).
REFUSED_GIVE_UP_SECONDS = 1.0

_json = msgspec.json.Encoder()
_T = TypeVar("_T")
#: The server's `-ERR` for a refused publish or subscription, as nats-py hands it to the error
#: callback (lower-cased): `permissions violation for subscription to "x" using queue "q"`.
_REFUSED = re.compile(r'permissions violation for (publish|subscription) to "?([^"\s]+)"?(?: using queue "?([^"\s]+)"?)?', re.IGNORECASE)


def connect_options(nats_settings: NatsSettings) -> dict[str, Any]:
    """nats-py options from settings: auth (user/password, token, nkey seed, creds) and TLS."""
    options: dict[str, Any] = {}
    if nats_settings.user:
        options["user"] = nats_settings.user
        options["password"] = nats_settings.password or ""
    if nats_settings.token:
        options["token"] = nats_settings.token
    if nats_settings.nkey_seed_file:
        options["nkeys_seed"] = nats_settings.nkey_seed_file
    if nats_settings.creds_file:
        options["user_credentials"] = nats_settings.creds_file
    if nats_settings.tls_ca_file or nats_settings.tls_cert_file:
        context = ssl.create_default_context(cafile=nats_settings.tls_ca_file)
        if nats_settings.tls_cert_file:
            context.load_cert_chain(nats_settings.tls_cert_file, nats_settings.tls_key_file)
        options["tls"] = context
    return options


class Refusals:
    """What the server refuses this connection's user, told to the calls waiting on it and kept.

    A publish the user may not make gets no reply: the server sends `-ERR 'Permissions
    Violation for Publish to "<subject>"'` and keeps the connection, and nats-py passes it
    only to the error callback, so the refused request itself would just time out (a refused
    subscription just never gets a message).

    >>> with refusals.watch(["timestep.runs.start"]) as refused:
    ...     ...  # `refused` gets the subject if the server refuses a publish to it meanwhile

    A refusal some call is watching for is that call's to handle (an actor dead-letters the
    message whose handling it was); any other one -- a mailbox's fetch or ack, a subscription,
    an event published without waiting, a reply -- is `fatal`: the process cannot do its work
    and `timestep up` exits with it. Every refusal is logged once, and the first one is
    `denied`, the reason /readyz gives.
    """

    def __init__(self, user: str | None = None) -> None:
        self.user = user
        self.denied: PermissionDeniedError | None = None
        self.fatal: PermissionDeniedError | None = None
        self._failed = asyncio.Event()
        self._waiting: dict[str, set[asyncio.Future[str]]] = {}
        self._names: dict[str, str] = {}  # lower-cased subject -> as the watching call spelled it
        self._logged: set[tuple[str, str]] = set()

    def report(self, error: str) -> bool:
        """Called with each error the server sends; True when it was a refusal."""
        match = _REFUSED.search(error)
        if match is None:
            return False
        operation = "publish" if match.group(1).lower() == "publish" else "subscribe"
        subject = match.group(2).lower()  # nats-py lower-cases the server's errors
        queue = f"queue group {match.group(3)}" if match.group(3) else ""
        denied = PermissionDeniedError(self._names.get(subject) or _original_case(subject), self.user, queue, operation)
        if (operation, subject) not in self._logged:
            self._logged.add((operation, subject))
            log.error("%s [server: %s]", denied, error)
        self.denied = self.denied or denied
        waiting = self._waiting.get(subject, ()) if operation == "publish" else ()
        for refused in waiting:
            if not refused.done():
                refused.set_result(subject)
        if not waiting:
            self.fail(denied)
        return True

    def fail(self, denied: PermissionDeniedError) -> None:
        """Mark a refusal the process cannot work without (the first one is kept)."""
        self.denied = self.denied or denied
        if self.fatal is None:
            self.fatal = denied
            self._failed.set()

    async def wait_fatal(self) -> PermissionDeniedError:
        await self._failed.wait()
        assert self.fatal is not None
        return self.fatal

    @contextmanager
    def watch(self, subjects: list[str] | tuple[str, ...]) -> Iterator[asyncio.Future[str]]:
        refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        keys = {subject.lower(): subject for subject in subjects}
        for key, subject in keys.items():
            self._waiting.setdefault(key, set()).add(refused)
            self._names[key] = subject
        try:
            yield refused
        finally:
            for key in keys:
                waiting = self._waiting.get(key)
                if waiting is not None:
                    waiting.discard(refused)
                    if not waiting:
                        del self._waiting[key]
                        del self._names[key]


class Bus:
    """A NATS connection with the contract's streams. One per process.

    >>> bus = await Bus.connect("nats://127.0.0.1:4222")
    >>> await bus.ensure_streams()
    """

    def __init__(self, nc: NatsClient, settings: Settings, *, refusals: Refusals | None = None) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.settings = settings
        self.subjects = Subjects(settings.prefix)
        self.refusals = refusals or Refusals(settings.nats.user)
        """Fed by the connection's error callback (see `connect`)."""
        self._agents_kv: Any = None
        self._hosts_expire = False

    @classmethod
    async def connect(
        cls, url: str | None = None, *, settings: Settings | None = None, name: str = "timestep",
        refused_give_up: float | None = None, url_file: Path | None = None,
    ) -> Bus:
        """Connect, retrying the first connection for up to NATS_CONNECT_TIMEOUT seconds. With
        `refused_give_up`, give up after that many seconds when every attempt was refused (nothing
        listens at the URL: NatsUnreachableError), as a command-line client should. `url_file`: the
        file `url` was read from (the nats.url of `timestep up`), read again while reconnecting: a
        restarted server that had to take another port is found there."""
        settings = settings or current_settings()
        url = url or settings.nats.url
        if not url:
            raise ValueError("no NATS URL: set NATS_URL, or start the embedded server with `timestep up`")

        last_error: list[BaseException] = []
        refusals = Refusals(settings.nats.user)
        loop = asyncio.get_running_loop()
        began = loop.time()
        only_refused = asyncio.Event()  # set once every attempt for `refused_give_up` s was refused
        kinds: set[type] = set()
        followed = [url]
        # An outage is told twice: when the connection is lost and when it is back. Its attempts
        # fail every 0.25 s (about 100 refusals in a 25 s restart): those only at DEBUG, but an
        # error that is not the server being away (authorization, TLS) once each, as it says why.
        lost: dict[str, Any] = {}

        def follow_url_file() -> None:
            if url_file is None or nc.is_closed:
                return
            try:
                named = url_file.read_text().strip()
            except OSError:
                return  # not written yet: the server is still starting
            if named and named != followed[0]:
                log.warning("NATS: %s names %s now; reconnecting there", url_file, redact_url(named))
                nc.set_server_pool([u.strip() for u in named.split(",")])
                followed[0] = named

        async def on_error(exc: Exception) -> None:
            if refusals.report(str(exc)):
                return  # logged there, once per subject
            # An authorization or TLS error says more than the connection reset that follows it.
            if not last_error or not (isinstance(last_error[0], ssl.SSLError) or "Authoriz" in str(last_error[0])):
                last_error[:] = [exc]
            kinds.add(type(exc))
            if refused_give_up is not None and kinds == {ConnectionRefusedError} and loop.time() - began >= refused_give_up:
                only_refused.set()
            said = f"{type(exc).__name__}: {exc}"
            if not (nc.is_connected or nc.is_reconnecting):  # before the first connection the final error says it all, once
                log.debug("NATS: %s", said)
            elif isinstance(exc, (StaleConnectionError, ConnectionClosedError, OSError)) and not isinstance(exc, ssl.SSLError):
                connection_lost(said)
            else:
                told = lost.setdefault("told", set())
                log.log(logging.DEBUG if "since" in lost and type(exc) in told else logging.WARNING, "NATS: %s", said)
                told.add(type(exc))
            if not nc.is_connected:  # an attempt failed: the next one tries the file's URL
                follow_url_file()

        def connection_lost(reason: str) -> None:
            if "since" in lost:
                log.debug("NATS: %s", reason)
                return
            lost["since"] = loop.time()
            log.warning("NATS: connection to %s lost (%s); reconnecting", redact_url(followed[0]), reason)

        async def on_disconnect() -> None:
            if not (nc.is_closed or nc.is_draining):
                connection_lost("disconnected")
                follow_url_file()

        async def on_reconnect() -> None:
            since = lost.pop("since", None)
            lost.clear()
            away = f" after {loop.time() - since:.1f} s" if since is not None else ""
            log.warning("NATS: reconnected to %s%s", redact_url(followed[0]), away)

        nc = NatsClient()
        # Reconnect forever once connected, but give the first connection a deadline:
        # nats-py would otherwise retry a refused login forever.
        connecting = asyncio.ensure_future(
            nc.connect(
                servers=[u.strip() for u in url.split(",")],
                name=name,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.25,
                connect_timeout=5,
                error_cb=on_error,
                disconnected_cb=on_disconnect,
                reconnected_cb=on_reconnect,
                **connect_options(settings.nats),
            )
        )
        refused = asyncio.ensure_future(only_refused.wait())
        try:
            await asyncio.wait({connecting, refused}, timeout=settings.nats.connect_deadline, return_when=asyncio.FIRST_COMPLETED)
        finally:
            refused.cancel()
        if connecting.done() and connecting.exception() is None:
            return cls(nc, settings, refusals=refusals)
        connecting.cancel()
        await asyncio.gather(connecting, return_exceptions=True)
        await nc.close()
        if only_refused.is_set():
            raise NatsUnreachableError(url, f"nothing answers at {redact_url(url)} (connection refused)")
        exc = connecting.exception() if connecting.done() and not connecting.cancelled() else asyncio.TimeoutError()
        cause = last_error[0] if last_error else exc
        check = (
            "check NATS_TLS_CA_FILE (the CA that signed the server's certificate) and, when the server "
            "verifies clients, NATS_TLS_CERT_FILE and NATS_TLS_KEY_FILE"
            if isinstance(cause, ssl.SSLError) else "check NATS_URL and the NATS_* credentials"
        )
        raise ConnectionError(
            f"could not connect to NATS at {redact_url(url)} within {settings.nats.connect_deadline:g} s "
            f"({type(cause).__name__}: {redact_url(str(cause))}); {check}"
        )

    async def close(self) -> None:
        if not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.drain(), 10)
            except Exception:
                await self.nc.close()

    # --- streams --------------------------------------------------------------

    def stream_configs(self) -> list[StreamConfig]:
        s, window, r = self.subjects, self.settings.duplicate_window_seconds, self.settings.stream_replicas
        return [
            # no_ack: JetStream does not answer a request on the submit subject, so the
            # governor's `accepted`/`rejected` reaches the requester instead, shaped as the
            # PubAck or API error a JetStream publish waits for (see submit_answer).
            StreamConfig(
                name=SUBMIT_STREAM, subjects=[s.submit], retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE, num_replicas=r, no_ack=True, duplicate_window=window,
            ),
            StreamConfig(
                name=WORK_STREAM, subjects=[s.start, s.start_typescript], retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE, num_replicas=r, duplicate_window=window,
            ),
            StreamConfig(
                name=CONTROL_STREAM, subjects=[s.all_control], retention=RetentionPolicy.WORK_QUEUE,
                storage=StorageType.FILE, num_replicas=r, duplicate_window=window,
            ),
            StreamConfig(
                name=EVENTS_STREAM, subjects=[s.all_events], retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE, num_replicas=r, duplicate_window=window, max_age=self.settings.events_max_age_seconds,
                discard=DiscardPolicy.OLD, allow_direct=True,
            ),
            StreamConfig(
                name=DEAD_STREAM, subjects=[s.all_dead], retention=RetentionPolicy.LIMITS,
                storage=StorageType.FILE, num_replicas=r, max_age=30 * 24 * 3600.0, discard=DiscardPolicy.OLD,
            ),
        ]

    async def ensure_streams(self) -> None:
        """Create the contract's streams, or bring their settings up to date (idempotent)."""
        for config in self.stream_configs():
            api = [f"{JS_API}.STREAM.{op}.{config.name}" for op in ("CREATE", "UPDATE")]
            await self._retrying(f"stream {config.name}", lambda config=config: self._ensure_stream(config), *api)

    async def _ensure_stream(self, config: StreamConfig) -> None:
        try:
            await self.js.add_stream(config)
        except BadRequestError:
            try:
                await self.js.update_stream(config)
            except BadRequestError as exc:
                log.warning("stream %s exists with settings that cannot change (%s); using it as it is", config.name, exc)

    async def _retrying(self, what: str, call: Callable[[], Awaitable[_T]], *publishes_to: str) -> _T:
        """Retry a JetStream API call through transient errors (a cluster electing leaders, a
        server restarting) for up to STARTUP_RETRY_SECONDS, then fail with the reason; fail at
        once when the server refuses the user a publish to one of the subjects it uses."""
        deadline = time.monotonic() + STARTUP_RETRY_SECONDS
        delay = 0.1
        while True:
            try:
                return await self._unless_refused(call(), *publishes_to, what=what)
            except TRANSIENT as exc:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"JetStream did not answer for {what} within {STARTUP_RETRY_SECONDS:g} s ({type(exc).__name__})") from exc
                log.warning("%s: %s; retrying in %.1f s", what, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def pull(self, stream: str, durable: str, filter_subject: str, *, ack_wait: float = 30.0, max_ack_pending: int = 1000) -> Any:
        """A durable pull subscription (created with this config if missing)."""
        config = ConsumerConfig(
            durable_name=durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=ack_wait,
            max_ack_pending=max_ack_pending,
            filter_subject=filter_subject,
        )
        return await self.js.pull_subscribe(filter_subject, durable=durable, stream=stream, config=config)

    # --- publishing -----------------------------------------------------------

    async def _unless_refused(self, call: Awaitable[_T], *subjects: str, what: str = "") -> _T:
        """`call`'s result; or PermissionDeniedError as soon as the server refuses this connection
        a publish to one of `subjects` (see `Refusals`), instead of the timeout `call` would end in.

        >>> await bus._unless_refused(bus.js.publish(subject, data), subject)
        """
        with self.refusals.watch(subjects) as refused:
            task = asyncio.ensure_future(call)
            try:
                await asyncio.wait((task, refused), return_when=asyncio.FIRST_COMPLETED)
            finally:
                if not task.done():
                    task.cancel()
        if refused.done() and (not task.done() or task.cancelled() or task.exception() is not None):
            subject = next(s for s in subjects if s.lower() == refused.result())
            raise PermissionDeniedError(subject, self.settings.nats.user, what)
        return task.result()

    async def publish_durably(self, subject: str, data: bytes, msg_id: str, *, headers: dict[str, str] | None = None) -> bool:
        """Publish to JetStream, retrying transient failures until stored; raises
        PermissionDeniedError, without retrying, when the user may not publish to `subject`.
        Returns True when JetStream had it already (a repeat inside the duplicate window)."""
        all_headers = {**JSON_HEADERS, "Nats-Msg-Id": msg_id, **(headers or {})}
        delay = 0.05
        while True:
            try:
                ack = await self._unless_refused(self.js.publish(subject, data, headers=all_headers, timeout=5), subject)
                return bool(ack.duplicate)
            except TRANSIENT as exc:
                log.warning("publish to %s failed (%s); retrying in %.2fs", subject, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    def event_message(self, event: RunEvent) -> tuple[str, bytes, str, dict[str, str]]:
        """(subject, body, Nats-Msg-Id, headers) of a run event: `<prefix>.runs.events.<run_id>.<type>`,
        de-duplicated by `<run_id>.<seq>` (a cancellation by `<run_id>.cancelled.<seq>`: it can
        come from two places; a resumed run cancelled again is a new one); the headers carry the run's trace context when it is bound here."""
        tag = type(event).__struct_config__.tag  # type: ignore[attr-defined]
        msg_id = f"{event.run_id}.cancelled.{event.seq}" if tag == "cancelled" else f"{event.run_id}.{event.seq}"
        headers = observe.trace_headers(observe.run_trace(event.run_id))
        return self.subjects.events(event.run_id, tag), encode_event(event), msg_id, headers

    async def publish_event(self, event: RunEvent) -> None:
        """Publish a run event and wait until JetStream stored it."""
        subject, data, msg_id, headers = self.event_message(event)
        await self.publish_durably(subject, data, msg_id, headers=headers)
        _count(event)

    async def dead_letter(
        self, subject: str, data: bytes, headers: dict[str, str] | None, reason: str, error: BaseException | ErrorInfo,
        *, origin: str | None = None,
    ) -> None:
        """Copy an unprocessable message, with its reason, to `<prefix>.dead.<subject>`.
        `origin` identifies the message (stream and sequence), so a redelivery is dead-lettered once."""
        info = error if isinstance(error, ErrorInfo) else error_info(error)
        letter = DeadLetter(
            subject=subject,
            reason=reason,
            error=info,
            data=data[:DEAD_DATA_LIMIT].decode("utf-8", errors="replace"),
            size=len(data),
            headers={k: "[redacted]" if _secret_header(k) else v for k, v in (headers or {}).items()},
            time=time.time(),
        )
        dead_subject = self.subjects.dead(subject) if _token_safe_subject(subject) else self.subjects.dead("invalid")
        try:
            await self.publish_durably(dead_subject, _json.encode(letter), f"dead.{origin or uuid.uuid4().hex}")
        except PermissionDeniedError as exc:
            self.refusals.fail(exc)  # no message can be given up on: each would be redelivered forever
            raise
        metrics.DEAD_LETTERS.labels(stream=origin.split(".")[0] if origin else "core").inc()

    async def last_event_seq(self, run_id: str) -> int:
        """The highest `seq` among a run's stored events (0 when it has none)."""
        return (await self.last_event(run_id))[0]

    async def last_event(self, run_id: str) -> tuple[int, dict[str, str], str | None]:
        """The highest `seq` among a run's stored events, with that event's headers and type
        ((0, {}, None) when none): one direct get, so a slow server is not taken for no events."""
        try:
            msg = await self.js.get_last_msg(EVENTS_STREAM, self.subjects.run_events(run_id), direct=True)
        except NotFoundError:
            return 0, {}, None
        event = msgspec.json.decode(msg.data)
        return int(event.get("seq", 0)), dict(msg.headers or {}), event.get("type")

    # --- which agents are hosted --------------------------------------------------

    async def _agents_bucket(self) -> Any:
        """The bucket of hosted agents, opened once per connection (created if missing)."""
        if self._agents_kv is None:
            async def open_or_create() -> Any:
                try:
                    return await self.js.key_value(AGENTS_BUCKET)
                except NotFoundError:
                    return await self.js.create_key_value(
                        bucket=AGENTS_BUCKET, history=1, ttl=HOSTED_TTL_SECONDS, replicas=self.settings.stream_replicas
                    )

            api = [f"{JS_API}.STREAM.{op}.KV_{AGENTS_BUCKET}" for op in ("INFO", "CREATE")]
            self._agents_kv = await self._retrying("the agents bucket", open_or_create, *api)
        return self._agents_kv

    async def _expire_hosts(self) -> None:
        """A bucket made before announcements expired keeps entries forever: give it the TTL (its
        old entries, older than the TTL, go at once). Done by agent actors, which write the bucket."""
        stream = f"KV_{AGENTS_BUCKET}"
        info = await self._retrying("the agents bucket", lambda: self.js.stream_info(stream), f"{JS_API}.STREAM.INFO.{stream}")
        if info.config.max_age != HOSTED_TTL_SECONDS:
            info.config.max_age = HOSTED_TTL_SECONDS
            info.config.duplicate_window = min(info.config.duplicate_window or HOSTED_TTL_SECONDS, HOSTED_TTL_SECONDS)
            await self._retrying("the agents bucket", lambda: self.js.update_stream(info.config), f"{JS_API}.STREAM.UPDATE.{stream}")

    async def announce_agents(self, names: list[str], executor_id: str) -> None:
        """This process hosts `names`, for the next HOSTED_TTL_SECONDS: a live agent actor renews
        it (a governor rejects requests for agents no live process hosts). Nothing withdraws it on
        a stop: a restart within the TTL (a deploy) refuses no request meanwhile."""
        bucket = await self._agents_bucket()
        if not self._hosts_expire:
            await self._expire_hosts()
            self._hosts_expire = True
        entry = _json.encode({"executor_id": executor_id, "time": time.time()})
        for name in names:
            key = _host_key(name, executor_id)
            await self._retrying("the agents bucket", lambda key=key: bucket.put(key, entry), f"$KV.{AGENTS_BUCKET}.{key}")

    async def agent_runtime(self, name: str) -> str | None:
        """"typescript" when every live host of agent `name` is a TypeScript agent actor (its
        announcement says `"runtime": "typescript"`), "python" when a host is a Python one, None when
        no live process hosts it. Raises when the bucket cannot be read: a failed read is not a "no"."""
        keys = await self._host_keys(f"{_agent_key(name)}.*")
        if not keys:
            return None
        bucket = await self._agents_bucket()
        for key in keys:
            try:
                entry = await bucket.get(key)
            except KeyNotFoundError:
                continue  # expired meanwhile
            try:
                runtime = msgspec.json.decode(entry.value or b"{}").get("runtime", "python")
            except (msgspec.DecodeError, AttributeError):
                runtime = "python"
            if runtime != "typescript":
                return "python"
        return "typescript"

    async def hosted_agents(self) -> list[str]:
        """The agents live processes host. Raises when the bucket cannot be read."""
        names = {bytes.fromhex(key.split(".", 1)[0][2:]).decode() for key in await self._host_keys("*.*")}
        return sorted(names)

    async def _host_keys(self, pattern: str) -> list[str]:
        """The live keys matching `pattern`, in one stream-info request (no consumer to create and
        delete per read): expired entries are gone from the stream, and nothing deletes keys."""
        stream, prefix = f"KV_{AGENTS_BUCKET}", f"$KV.{AGENTS_BUCKET}."
        await self._agents_bucket()  # created if missing
        info = await self._unless_refused(self.js.stream_info(stream, subjects_filter=prefix + pattern), f"{JS_API}.STREAM.INFO.{stream}")
        return [subject[len(prefix):] for subject in (info.state.subjects or {})]

    async def request(
        self, subject: str, data: bytes, timeout: float, headers: dict[str, str] | None = None, *, refusal_fails: bool = False
    ) -> bytes:
        """Core request/reply; raises TimeoutError when nobody answers in time, and with
        `refusal_fails` PermissionDeniedError as soon as the server refuses the publish."""
        try:
            call = self.nc.request(subject, data, timeout=timeout, headers={**JSON_HEADERS, **(headers or {})})
            reply = await (self._unless_refused(call, subject) if refusal_fails else call)
        except (NatsTimeout, NoRespondersError) as exc:
            raise TimeoutError(f"no answer on {subject} within {timeout:g} s") from exc
        except (ConnectionClosedError, ConnectionReconnectingError, OutboundBufferLimitError) as exc:
            raise ConnectionError(f"NATS connection not usable for {subject} ({type(exc).__name__})") from exc
        return reply.data

    async def publish_acked(self, subject: str, data: bytes, timeout: float, headers: dict[str, str] | None = None) -> dict[str, Any]:
        """A JetStream publish as any NATS program sends one, answered as it sees it: the PubAck
        `{"stream", "seq", "duplicate"}`, or JetStream's API error `{"error": {"code", "description"}}`.
        Raises TimeoutError when nobody answers in time."""
        try:
            ack = await self.js.publish(subject, data, timeout=timeout, headers={**JSON_HEADERS, **(headers or {})})
        except APIError as exc:
            return {"error": {"code": exc.code, "description": exc.description}}
        except (NatsTimeout, NoRespondersError) as exc:
            raise TimeoutError(f"no answer on {subject} within {timeout:g} s") from exc
        return {"stream": ack.stream, "seq": ack.seq, "duplicate": bool(ack.duplicate)}

    async def publish_core(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """A core publish, no reply subject: nothing answers it (flushed, so it has left this process)."""
        await self.nc.publish(subject, data, headers={**JSON_HEADERS, **(headers or {})})
        await self.nc.flush()

    async def stored_event(self, run_id: str, kind: str) -> bytes | None:
        """The run's latest stored event of this type, or None (a direct get: no waiting)."""
        try:
            return (await self.js.get_last_msg(EVENTS_STREAM, self.subjects.events(run_id, kind), direct=True)).data
        except Exception:
            return None

    async def history(self, run_id: str, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Every stored event of a run, in order, as plain JSON objects ([] when it has none)."""
        sub = await self.js.subscribe(
            self.subjects.run_events(run_id), ordered_consumer=True, stream=EVENTS_STREAM, deliver_policy=DeliverPolicy.ALL,
        )
        try:
            info = await sub.consumer_info()
            stored = info.num_pending + (info.delivered.consumer_seq if info.delivered else 0)
            return [msgspec.json.decode((await sub.next_msg(timeout=timeout)).data) for _ in range(stored)]
        finally:
            await _unsubscribe(sub)

    async def dead_letters(self, limit: int = 50) -> list[DeadLetter]:
        """The newest `limit` dead letters, oldest first."""
        try:
            info = await self.js.stream_info(DEAD_STREAM)
        except NotFoundError:
            return []
        count = min(limit, info.state.messages)
        if count <= 0:
            return []
        start = max(info.state.first_seq, info.state.last_seq - count + 1)
        sub = await self.js.subscribe(
            self.subjects.all_dead, ordered_consumer=True, stream=DEAD_STREAM,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start),
        )
        letters = []
        try:
            while len(letters) < count:
                msg = await sub.next_msg(timeout=5)
                letters.append(msgspec.json.decode(msg.data, type=DeadLetter))
                if msg.metadata.num_pending == 0:
                    break
        finally:
            await _unsubscribe(sub)
        return letters

    async def run_outcome(self, run_id: str, timeout: float) -> bytes | None:
        """The run's stored `rejected` or `accepted` event, waiting up to `timeout` for one."""
        arrived: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

        async def on_event(event_msg: Msg) -> None:
            if not arrived.done():
                arrived.set_result(event_msg.data)

        kinds = ("rejected", "accepted")
        subs = [await self.nc.subscribe(self.subjects.events(run_id, kind), cb=on_event) for kind in kinds]
        try:
            for kind in kinds:
                stored = await self.stored_event(run_id, kind)
                if stored is not None:
                    return stored
            try:
                return await asyncio.wait_for(arrived, timeout)
            except asyncio.TimeoutError:
                return None
        finally:
            for sub in subs:
                await _unsubscribe(sub)

    async def follow(self, subject_filter: str, *, from_start: bool) -> AsyncIterator[Msg]:
        """Stored events matching `subject_filter` (all of them, or only new ones), then live ones."""
        sub = await self.js.subscribe(
            subject_filter, ordered_consumer=True, stream=EVENTS_STREAM,
            deliver_policy=DeliverPolicy.ALL if from_start else DeliverPolicy.NEW,
        )
        try:
            async for msg in sub.messages:
                yield msg
        finally:
            await _unsubscribe(sub)

    async def serve(self, subject: str, queue: str, handler: Callable[[Msg], Awaitable[None]]) -> Any:
        """A core-NATS request/reply service in a queue group (one member answers)."""
        return await self.nc.subscribe(subject, queue=queue, cb=handler)


AGENTS_BUCKET = "TIMESTEP_AGENTS"
#: How long an agent actor's announcement of the agents it hosts lasts unless renewed: a process
#: that died without withdrawing it (SIGKILL, a lost machine) stops counting as a host after this.
HOSTED_TTL_SECONDS = 15.0
#: How often a live agent actor renews its announcement.
HOSTED_RENEW_SECONDS = HOSTED_TTL_SECONDS / 3
JS_API = "$JS.API"  # the JetStream API's subject prefix (nc.jetstream()'s default)

#: Upper-case tokens of the JetStream, key-value and inbox subjects, for naming a refused one as
#: it is spelled (the server's error comes lower-cased).
_UPPER_TOKENS = {
    "$JS", "$KV", "_INBOX", "API", "ACK", "FC", "INFO", "STREAM", "CONSUMER", "DURABLE", "CREATE", "UPDATE", "DELETE",
    "MSG", "NEXT", "GET", "DIRECT", "NAMES", "LIST",
    SUBMIT_STREAM, WORK_STREAM, CONTROL_STREAM, EVENTS_STREAM, DEAD_STREAM, AGENTS_BUCKET, f"KV_{AGENTS_BUCKET}",
}


def _original_case(subject: str) -> str:
    tokens = subject.split(".")
    if tokens[0].upper() not in ("$JS", "$KV", "_INBOX"):
        return subject
    return ".".join(token.upper() if token.upper() in _UPPER_TOKENS else token for token in tokens)


def _agent_key(name: str) -> str:
    # KV keys allow fewer characters than agent names: hex keeps any name.
    return "a-" + name.encode().hex()


def _host_key(name: str, executor_id: str) -> str:
    """One key per agent and hosting process, so that each process's entry lives and expires alone."""
    return f"{_agent_key(name)}.e-{executor_id.encode().hex()}"


#: A header whose name contains one of these is a credential: a dead letter keeps its name, not its value.
SECRET_HEADER_WORDS = ("authorization", "token", "secret", "password", "passwd", "api-key", "apikey", "api_key", "cookie", "credential")


def _secret_header(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in SECRET_HEADER_WORDS)


def redact_url(url: str) -> str:
    """A URL (or text holding URLs) without credentials, fit for logs: `//user:***@` and `//***@` (a token)."""
    url = re.sub(r"//([^:/@\s]+):[^@\s]*@", r"//\1:***@", url)
    return re.sub(r"//[^:/@\s]+@", "//***@", url)


async def _unsubscribe(sub: Any) -> None:
    """Unsubscribe, unless the connection is already closing (which ends the subscription anyway)."""
    try:
        await sub.unsubscribe()
    except (ConnectionClosedError, ConnectionDrainingError, BadSubscriptionError):
        pass


def _count(event: RunEvent) -> None:
    metrics.count_event(type(event).__struct_config__.tag)  # type: ignore[attr-defined]


def _token_safe_subject(subject: str) -> bool:
    return all(token and all(c.isalnum() or c in "_-" for c in token) for token in subject.split("."))


class BusEventSink:
    """The event sink that publishes every run event to JetStream (see `timestep.events`).

    `emit` publishes without waiting; `settle(run_id)`, which a run calls before a step (or the
    run) is recorded as done, waits until JetStream stored every event of that run emitted
    before it (`settle()`: of every run), and publishes again (same Nats-Msg-Id) any whose
    acknowledgement did not come; it raises PermissionDeniedError, after trying them all, when
    the server refused one (a refusal `timestep up` exits with: see `Refusals`). A run waits
    for its own events only, not for those of the other runs of the process."""

    ACK_WAIT = 5.0

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._pending: dict[str, list[tuple[asyncio.Future, str, bytes, str, dict[str, str]]]] = {}
        self._live_dropped: set[str] = set()  # runs whose dropped live text was logged (once each)

    async def emit(self, event: RunEvent) -> None:
        subject, data, msg_id, headers = self.bus.event_message(event)
        _count(event)
        try:
            future = await self.bus.js.publish_async(subject, data, headers={**JSON_HEADERS, "Nats-Msg-Id": msg_id, **headers})
        except Exception:
            await self.bus.publish_durably(subject, data, msg_id, headers=headers)
            return
        self._pending.setdefault(event.run_id, []).append((future, subject, data, msg_id, headers))

    async def live(self, piece: LiveText) -> None:
        """Streamed model text as it is yielded: a core NATS publish on `<prefix>.runs.live.<run_id>`,
        not stored and not waited for (the run's `delta` events store the same text)."""
        try:
            await self.bus.nc.publish(self.bus.subjects.live(piece.run_id), _json.encode(piece))
        except Exception as exc:  # disconnected, its buffer full: the piece is dropped, the delta events keep the text
            metrics.count_live_dropped()
            if piece.run_id not in self._live_dropped:
                if len(self._live_dropped) > 10_000:
                    self._live_dropped.clear()
                self._live_dropped.add(piece.run_id)
                log.warning("live text of run %s not published (%s: %s); its delta events hold the text", piece.run_id, type(exc).__name__, exc)

    async def last_stored(self, run_id: str) -> tuple[int, str] | None:
        """The run's last stored event (seq, type), by one direct get from the events stream."""
        try:
            msg = await self.bus.js.get_last_msg(EVENTS_STREAM, self.bus.subjects.run_events(run_id), direct=True)
        except NotFoundError:
            return None
        event = msgspec.json.decode(msg.data)
        return int(event.get("seq", 0)), str(event.get("type"))

    async def settle(self, run_id: str | None = None) -> None:
        runs = list(self._pending) if run_id is None else [run_id]
        snapshot = [entry for run in runs for entry in self._pending.get(run, ())]
        if not snapshot:
            return
        waiting = [entry[0] for entry in snapshot if not entry[0].done()]
        if waiting:
            await asyncio.wait(waiting, timeout=self.ACK_WAIT)
        refused: PermissionDeniedError | None = None
        for future, subject, data, msg_id, headers in snapshot:
            if future.done() and not future.cancelled() and future.exception() is None:
                continue
            future.cancel()  # no ack: free its place among nats-py's pending publishes
            try:
                await self.bus.publish_durably(subject, data, msg_id, headers=headers)
            except PermissionDeniedError as exc:
                refused = refused or exc  # the others still get their chance
        # Removed only now: a step of the same run settling meanwhile waits for them too.
        done = {id(entry) for entry in snapshot}
        for run in runs:
            left = [entry for entry in self._pending.get(run, ()) if id(entry) not in done]
            if left:
                self._pending[run] = left
            else:
                self._pending.pop(run, None)
        if refused is not None:
            self.bus.refusals.fail(refused)  # a process that may not publish its runs' events cannot do its work
            raise refused
