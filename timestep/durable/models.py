"""Which models runs use: the SDK's OpenAI models with OPENAI_API_KEY (OPENAI_BASE_URL
points them at any OpenAI-compatible server; TIMESTEP_OPENAI_API=chat_completions calls model
names through Chat Completions, which Ollama, vLLM and LM Studio speak), else the offline demo model."""

from __future__ import annotations

import logging

from agents import ModelProvider
from agents.models._openai_shared import get_default_openai_client
from agents.models.multi_provider import MultiProvider
from openai import AsyncOpenAI

from timestep.durable.offline_model import OfflineModelProvider
from timestep.settings import OPENAI_APIS, Settings, openai_api_key_set, openai_base_url
from timestep.settings import current as current_settings

log = logging.getLogger("timestep.durable.models")
_warned = False


_durable: dict[tuple[bool, str | None, str], ModelProvider] = {}
_chosen_api: str | None = None


def use_openai_api(api: str | None) -> None:
    """Call model names through `api` ("responses" or "chat_completions") in this process,
    over TIMESTEP_OPENAI_API; None goes back to the variable."""
    global _chosen_api
    if api is not None and api not in OPENAI_APIS:
        from timestep.errors import ValidationError

        raise ValidationError("openai_api", f"{api!r} is not an OpenAI API", "pass chat_completions (Ollama, vLLM, LM Studio) or responses")
    _chosen_api = api


def current_openai_api() -> str:
    return _chosen_api or current_settings().openai_api


def durable_provider() -> ModelProvider:
    """The default provider with every model it returns made durable (one per process)."""
    from timestep.durable.steps import DurableModelProvider

    key = (openai_api_key_set(), openai_base_url(), current_openai_api())  # once per run: not every setting
    if key not in _durable:
        _durable[key] = DurableModelProvider(default_model_provider())
    return _durable[key]


def default_model_provider(settings: Settings | None = None) -> ModelProvider:
    global _warned
    # OPENAI_API_KEY and OPENAI_BASE_URL are the openai client's own variables, read as it reads them
    # (when a client is made): a program may set them after Timestep read its own settings.
    key_set = settings.openai_api_key_set if settings is not None else openai_api_key_set()
    settings = settings or current_settings()
    if key_set:
        # None leaves the SDK's own default (and `set_default_openai_api`, where a user called it).
        use_responses = False if (_chosen_api or settings.openai_api) == "chat_completions" else None
        if get_default_openai_client() is not None:  # the application's own client, retries as it set them
            return MultiProvider(openai_use_responses=use_responses)
        # Timestep retries model calls durably (one step per attempt); the client's own retries
        # would multiply with them, so they are off.
        return MultiProvider(openai_client=AsyncOpenAI(max_retries=0), openai_use_responses=use_responses)
    if not _warned:
        _warned = True
        log.warning("OPENAI_API_KEY is not set: agents without a Model object use the offline demo model, which is rules, not an LLM")
    return OfflineModelProvider()
