"""Who may do what in the console: the NATS server decides.

Open (the default, on 127.0.0.1): every request uses the console's own connection.

Login (required on any other address, or asked for): the browser sends HTTP Basic
credentials, which are a NATS user and password of the deployment (`deploy/nats/accounts.conf`:
`viewer`, `client` (approver), `admin`); the console opens one connection per user with them
and acts through it. What the user may not do, the server refuses (`PermissionDeniedError`),
and the page shows the refusal: a viewer's approve is refused by the same permissions that
refuse it to any other program.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import hashlib
import ipaddress

from timestep.client import Client
from timestep.settings import Settings

#: A wrong password is refused by the server; nats-py retries the first connection for this long.
LOGIN_CONNECT_SECONDS = 3.0


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost: only this machine can reach the console."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(user, password) of an `Authorization: Basic ...` header, or None."""
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        user, sep, password = base64.b64decode(header[6:].strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep and user else None


class LoginRefused(Exception):
    """The NATS server did not take these credentials."""


class Login:
    """One NATS connection per user who logged in, made with that user's credentials."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings
        self._clients: dict[tuple[str, str], Client] = {}
        self._lock = asyncio.Lock()

    async def client(self, user: str, password: str) -> Client:
        key = (user, hashlib.sha256(password.encode()).hexdigest())
        async with self._lock:
            found = self._clients.get(key)
            if found is not None and not found.bus.nc.is_closed:
                return found
            nats = dataclasses.replace(
                self.settings.nats, user=user, password=password, token=None, nkey_seed_file=None, creds_file=None,
                connect_deadline=LOGIN_CONNECT_SECONDS,
            )
            try:
                client = await Client.connect(self.url, settings=dataclasses.replace(self.settings, nats=nats))
            except Exception as exc:
                raise LoginRefused(f"the NATS server did not accept user {user!r} ({type(exc).__name__})") from None
            self._clients[key] = client
            return client

    async def close(self) -> None:
        for client in self._clients.values():
            try:
                await client.close()
            except Exception:
                pass
        self._clients.clear()
