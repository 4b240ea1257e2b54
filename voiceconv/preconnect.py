"""Pre-connect while the phone rings: the speech session opened from the incoming-call webhook.

For an agent with ``preconnect`` on, the webhook starts opening the OpenAI session (Realtime or
GPT-Live) and sends its configuration in the background, while Twilio sets up the media stream:
by the time the stream's ``start`` arrives, ``session.updated`` is usually waiting, and the
greeting goes out at once.

- :func:`start` is the webhook's one call: it returns at once (the answer never waits) and
  needs no ``Call`` row; the agent is looked up, the session configured and opened in a task.
- :func:`adopt` is the stream's: it takes the pre-opened session when the stream landed on this
  process and it was configured exactly as the stream would configure its own; otherwise the
  stream opens its own as before. Adoption is only an optimisation: nothing here is needed by
  another process.
- A session whose stream never came (or came to another process) is closed after
  ``PRECONNECT_TIMEOUT`` seconds.

The registry is process-local and keyed by CallSid; it lives on the server's event loop (the
async webhook view and the stream's consumer share it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async

from voiceconv.conf import voiceconv_settings
from voiceconv.events import our_number
from voiceconv.gpt_live import OpenAILiveBackend, build_live_session
from voiceconv.realtime import (
    OpenAIRealtimeBackend,
    RealtimeBackend,
    build_session_config,
    default_openai_client,
    session_model,
)
from voiceconv.session import dumps

__all__ = ["Opened", "Plan", "adopt", "plan_for_number", "plan_of", "start"]

logger = logging.getLogger("voiceconv.preconnect")

REALTIME = "realtime"
GPT_LIVE = "gpt-live"


@dataclass(frozen=True, slots=True)
class Plan:
    """What the session is opened with: the backend, the model in its URL, the first events."""

    backend_name: str
    model: str
    events: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Opened:
    """A session opened and configured (its first events sent) for a call still ringing."""

    plan: Plan
    backend: RealtimeBackend


@dataclass(slots=True)
class _Entry:
    task: asyncio.Task[Opened | None]
    expiry: asyncio.TimerHandle


#: Sessions being opened, or opened, for calls whose stream has not come yet (by CallSid).
_pending: dict[str, _Entry] = {}
#: Closing tasks of orphans (kept referenced until done).
_closing: set[asyncio.Task[None]] = set()


def start(call_sid: str, direction: str, from_number: str, to_number: str) -> None:
    """The incoming-call webhook of ``call_sid``: pre-connect its agent's session if the agent
    asks for it. Returns at once; never raises."""
    if not call_sid or call_sid in _pending:
        return  # a retried webhook: the first one's session stands
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        logger.debug("call %s: no event loop (a sync server): no pre-connect", call_sid)
        return
    number = our_number(direction, from_number, to_number)
    task = loop.create_task(_open(call_sid, number))
    expiry = loop.call_later(voiceconv_settings.timeouts.preconnect, _expire, call_sid)
    _pending[call_sid] = _Entry(task, expiry)
    task.add_done_callback(lambda t: _opened(call_sid, t))


async def adopt(call_sid: str, plan: Plan) -> RealtimeBackend | None:
    """The stream of ``call_sid`` started here: its pre-opened session, if there is one and it
    was opened with ``plan`` (else it is closed and None is returned: the stream opens its own).

    A session still opening is waited for (at most ``CONNECT_TIMEOUT``): the stream would
    otherwise wait as long for its own."""
    entry = _pending.pop(call_sid, None)
    if entry is None:
        return None
    entry.expiry.cancel()
    try:
        opened = await asyncio.wait_for(entry.task, voiceconv_settings.timeouts.connect)
    except TimeoutError:
        logger.warning("call %s: pre-connected session still not open; opening another",
                       call_sid)
        return None
    except Exception:  # _open logs its own failures; this is the safety net
        logger.exception("call %s: pre-connect failed", call_sid)
        return None
    if opened is None:
        return None
    if opened.plan != plan:
        logger.info("call %s: pre-connected session configured differently from the stream's "
                    "(agent changed, or a consumer hook); opening another", call_sid)
        _close_later(opened.backend)
        return None
    logger.info("call %s: stream adopted the pre-connected %s session", call_sid,
                plan.backend_name)
    return opened.backend


# --- the background work ---------------------------------------------------------------------


async def _open(call_sid: str, number: str) -> Opened | None:
    """Look up the agent, and if it pre-connects, open and configure its session."""
    try:
        plan = await database_sync_to_async(plan_for_number, thread_sensitive=False)(number)
    except Exception as exc:
        logger.warning("call %s: no pre-connect (agent or tools could not be loaded: %s)",
                       call_sid, exc)
        return None
    if plan is None:
        return None
    backend = make_backend(plan)
    try:
        await asyncio.wait_for(backend.connect(), voiceconv_settings.timeouts.connect)
        for event in plan.events:
            await backend.send(event)
    except asyncio.CancelledError:
        await _close(backend)
        raise
    except Exception as exc:
        logger.warning("call %s: pre-connect failed (%s: %s); the stream opens its own session",
                       call_sid, exc.__class__.__name__, exc)
        await _close(backend)
        return None
    logger.info("call %s: %s session pre-connected while ringing", call_sid, plan.backend_name)
    return Opened(plan, backend)


def plan_for_number(number: str) -> Plan | None:
    """The session the stream of a call to ``number`` would open with the default consumer
    (sync: reads the agent and its tools), or None when its agent does not pre-connect."""
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import Agent
    from voiceconv.tools.binding import tools_for_agent

    if not Agent.objects.filter(enabled=True, preconnect=True).exists():
        return None  # the usual case, one cheap query (and for_number's warnings said once)
    agent = Agent.objects.for_number(number)
    if agent is None or not agent.preconnect:
        return None
    tools = [bound.definition() for bound in tools_for_agent(agent).values()]
    if agent.backend == GPT_LIVE:
        live = build_live_session(dict(agent.live_overrides()), tools)
        return Plan(GPT_LIVE, "", (dumps({"type": "session.start", "session": live}),))
    overrides = dict(agent.session_overrides())
    session = build_session_config(overrides, tools)
    event = dumps({"type": "session.update", "session": session})
    return Plan(REALTIME, session_model(overrides), (event,))


def make_backend(plan: Plan) -> RealtimeBackend:
    """The connection the default consumer would open for ``plan``."""
    client = default_openai_client()
    if plan.backend_name == GPT_LIVE:
        return OpenAILiveBackend(client)
    return OpenAIRealtimeBackend(client, plan.model)


def _opened(call_sid: str, task: asyncio.Task[Opened | None]) -> None:
    """A pre-connect finished: one that opened nothing leaves the registry at once."""
    entry = _pending.get(call_sid)
    if entry is None or entry.task is not task:
        return
    if task.cancelled() or task.exception() is not None or task.result() is None:
        _pending.pop(call_sid, None)
        entry.expiry.cancel()


def _expire(call_sid: str) -> None:
    """``PRECONNECT_TIMEOUT`` passed and no stream of the call came here: close its session."""
    if call_sid in _pending:
        _discard(call_sid, f"no stream within {voiceconv_settings.PRECONNECT_TIMEOUT} s")


def _discard(call_sid: str, why: str) -> None:
    entry = _pending.pop(call_sid, None)
    if entry is None:
        return
    entry.expiry.cancel()
    task = entry.task
    if not task.done():
        task.cancel()  # _open closes what it had opened
    elif not task.cancelled() and task.exception() is None and (opened := task.result()):
        _close_later(opened.backend)
    logger.info("call %s: pre-connected session closed (%s)", call_sid, why)


def _close_later(backend: RealtimeBackend) -> None:
    task = asyncio.get_running_loop().create_task(_close(backend))
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def _close(backend: Any) -> None:
    try:
        await asyncio.wait_for(backend.close(), 1.0)
    except Exception:
        logger.debug("closing a pre-connected session failed", exc_info=True)


def plan_of(backend_name: str, model: str, events: Sequence[str]) -> Plan:
    """The :class:`Plan` of a stream's own session (what :func:`adopt` compares)."""
    return Plan(backend_name, model if backend_name == REALTIME else "", tuple(events))
