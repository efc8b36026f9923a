"""Capture a LiteLLM router's traffic into the journal: a ``CustomLogger``.

SDK::

    import litellm
    from journal.integrations.litellm import JournalCallback
    litellm.callbacks = [JournalCallback("sessions.jsonl")]

Proxy (``config.yaml``), the log named by ``SESSION_JOURNAL_LOG``::

    litellm_settings: {callbacks: ["journal.integrations.litellm.handler"]}

LiteLLM calls the sync hook (``completion``) on a worker thread and the async hook
(``acompletion``, the proxy) on its logging worker, both after the response has gone to
the caller; a streamed call gets one hook when the stream ends, with the assembled
response. The async hook hands the append to a thread so the event loop never waits on
the disk. A failure is logged (logger ``journal.integrations``) and never reaches the
caller. What is appended is decided in ``journal.integrations.capture``.

The session id is read, in this order, from ``litellm_params.litellm_session_id`` (the
SDK's ``litellm_session_id=`` and the proxy's ``x-litellm-session-id`` header), the
standard logging payload's ``session_id`` (filled when
``litellm.request_correlation_in_logs`` is on) and ``metadata.session_id``. LiteLLM's
``trace_id`` is never used: without a session it is a fresh UUID per call.

This is the only module of the project that imports litellm.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from litellm.integrations.custom_logger import CustomLogger

from journal.integrations.capture import Call, HistoryChange, MissingSession, Recorder, log
from journal.log import Durability

DEFAULT_LOG = "sessions.jsonl"


class JournalCallback(CustomLogger):  # type: ignore[misc,unused-ignore]  # Any without litellm
    """Appends each successful call to the log at ``log`` (see the module docstring).

    ``missing_session``: ``"skip"`` (default) leaves calls without a session id out;
    ``"per_call"`` makes each its own session. ``history_change``: what to do when a
    client resends an edited history (``journal.integrations.capture``).
    """

    def __init__(
        self,
        log: str | os.PathLike[str] = DEFAULT_LOG,
        *,
        durability: Durability = "batch",
        missing_session: MissingSession = "skip",
        history_change: HistoryChange = "skip",
    ) -> None:
        super().__init__()
        self.recorder = Recorder(
            os.fspath(log),
            durability=durability,
            missing_session=missing_session,
            history_change=history_change,
        )

    def close(self) -> None:
        """Close the log (it opens again on the next call)."""
        self.recorder.close()

    # LiteLLM passes these by keyword: the parameter names are part of its interface.
    def log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        self.capture(kwargs, response_obj, start_time, end_time)

    async def async_log_success_event(
        self, kwargs: dict[str, Any], response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        await asyncio.to_thread(self.capture, kwargs, response_obj, start_time, end_time)

    def capture(self, kwargs: Mapping[str, Any], response_obj: Any, start: Any, end: Any) -> str:
        """Record one call; never raises (a failure is logged and returned as text)."""
        try:
            outcome = self.recorder.record(read_call(kwargs, response_obj, start, end))
        except Exception as exc:
            log.exception("session-journal could not record a LiteLLM call")
            return f"failed: {type(exc).__name__}"
        log.debug("LiteLLM call: %s", outcome)
        return outcome


def read_call(kwargs: Mapping[str, Any], response_obj: Any, start: Any, end: Any) -> Call:
    """The parts of LiteLLM's hook arguments that the journal records."""
    params = kwargs.get("litellm_params") or {}
    slo = kwargs.get("standard_logging_object") or {}
    metadata = params.get("metadata") or {}
    session = (
        params.get("litellm_session_id") or slo.get("session_id") or metadata.get("session_id")
    )
    model = slo.get("model_group") or _provider_model(slo, kwargs)
    started, first = slo.get("startTime"), slo.get("completionStartTime")
    ttft = first - started if isinstance(started, float) and isinstance(first, float) else None
    duration = (end - start).total_seconds() if isinstance(start, datetime) else None
    return Call(
        call_id=str(slo.get("litellm_call_id") or kwargs.get("litellm_call_id")),
        session_id=None if session is None else str(session),
        model=str(model),
        messages=list(kwargs.get("messages") or []),
        response=_message_item(response_obj.choices[0].message),
        prompt_tokens=slo.get("prompt_tokens"),
        completion_tokens=slo.get("completion_tokens"),
        duration_seconds=None if duration is None else max(duration, 0.0),
        time_to_first_token_seconds=None if ttft is None else max(ttft, 0.0),
        cost_usd=slo.get("response_cost"),
        stream=bool(slo.get("stream") or kwargs.get("stream")),
    )


def _provider_model(slo: Mapping[str, Any], kwargs: Mapping[str, Any]) -> str:
    model = str(slo.get("model") or kwargs.get("model") or "unknown")
    provider = slo.get("custom_llm_provider")
    return model if not provider or model.startswith(f"{provider}/") else f"{provider}/{model}"


def _message_item(message: Any) -> dict[str, Any]:
    """The response's message as the JSON item the provider's API returns."""
    if isinstance(message, Mapping):
        return dict(message)
    dumped: dict[str, Any] = message.model_dump(mode="json")
    return dumped


# For the proxy: ``callbacks: ["journal.integrations.litellm.handler"]``. Nothing is
# opened until the first call.
handler = JournalCallback(os.environ.get("SESSION_JOURNAL_LOG", DEFAULT_LOG))
