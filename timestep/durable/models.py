"""Which models runs use: the SDK's OpenAI models with OPENAI_API_KEY (OPENAI_BASE_URL
points them at any OpenAI-compatible server), else the offline demo model."""

from __future__ import annotations

import logging

from agents import ModelProvider
from agents.models._openai_shared import get_default_openai_client
from agents.models.multi_provider import MultiProvider
from openai import AsyncOpenAI

from timestep.durable.offline_model import OfflineModelProvider
from timestep.settings import Settings, openai_api_key_set, openai_base_url

log = logging.getLogger("timestep.durable.models")
_warned = False


_durable: dict[tuple[bool, str | None], ModelProvider] = {}


def durable_provider() -> ModelProvider:
    """The default provider with every model it returns made durable (one per process)."""
    from timestep.durable.steps import DurableModelProvider

    key = (openai_api_key_set(), openai_base_url())  # once per run: not every setting
    if key not in _durable:
        _durable[key] = DurableModelProvider(default_model_provider())
    return _durable[key]


def default_model_provider(settings: Settings | None = None) -> ModelProvider:
    global _warned
    settings = settings or Settings.from_env()
    if settings.openai_api_key_set:
        if get_default_openai_client() is not None:  # the application's own client, retries as it set them
            return MultiProvider()
        # Timestep retries model calls durably (one step per attempt); the client's own retries
        # would multiply with them, so they are off.
        return MultiProvider(openai_client=AsyncOpenAI(max_retries=0))
    if not _warned:
        _warned = True
        log.warning("OPENAI_API_KEY is not set: agents without a Model object use the offline demo model, which is rules, not an LLM")
    return OfflineModelProvider()
