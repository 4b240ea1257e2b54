"""The browser softphone's way into a call: staff talk to an agent with no phone.

The page (``voiceconv/static/voiceconv/softphone.js``) speaks the Twilio Media Streams
dialect over a WebSocket, so the call runs through the very same
:class:`~voiceconv.consumers.MediaStreamConsumer`, call core, tools and recorder as a phone
call. Only the way in differs:

- the route is wrapped in ``AllowedHostsOriginValidator`` + ``AuthMiddlewareStack``
  (see :data:`voiceconv.routing.websocket_urlpatterns`), and the handshake is refused unless
  the session's user is active staff with the ``voiceconv.place_browser_call`` permission;
- the page never names the call: its ``start`` names an agent (slug) and custom parameters,
  and the server creates the ``Call`` row (``direction = browser``) under a sid of its own.
  :meth:`BrowserCallConsumer.start_refusal` replaces the stream-token check: a token sent by
  the page is ignored (Twilio's way in is not accepted here), and the Twilio route never
  looks at a session.

Besides Twilio's ``media``/``mark``/``clear``, the page receives one message of its own,
``{"event": "call", "call": {"callSid", "agent", "feedPath", "reviewUrl"}}``, once the call is
recorded. The live transcript beside the call is the live monitor's feed of that call
(:mod:`voiceconv.monitor`, at ``feedPath``), which lets the user who placed a browser call
watch it without ``voiceconv.view_call``; ``reviewUrl`` is given to those who may open the
call in the admin.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Any, cast

from asgiref.typing import WebSocketConnectEvent, WebSocketSendEvent
from channels.db import database_sync_to_async
from django.db import DatabaseError
from django.urls import NoReverseMatch, reverse
from django.utils import timezone

from voiceconv.consumers import MediaStreamConsumer
from voiceconv.monitor import PLACE_CALL_PERMISSION, SOCKET_PATH, VIEW_PERMISSION
from voiceconv.session import StreamStart

logger = logging.getLogger("voiceconv.softphone")

#: The permission a staff user needs to call agents from the browser.
PERMISSION = PLACE_CALL_PERMISSION
#: Prefix of the call sids the server gives browser calls (Twilio's are ``CA…``).
CALL_SID_PREFIX = "BR"
#: Custom parameters the page may not set (the server sets them from the session).
RESERVED_PARAMETERS = frozenset({"call_token", "agent", "from", "to", "direction", "user"})
MAX_PARAMETERS = 20
MAX_PARAMETER_LENGTH = 500
_SID = re.compile(r"[A-Za-z0-9]{2,64}")


def may_place_browser_call(user: Any) -> bool:
    """Whether ``user`` may call agents from the browser: active staff with the permission."""
    return bool(
        user is not None
        and getattr(user, "is_authenticated", False)
        and getattr(user, "is_active", False)
        and getattr(user, "is_staff", False)
        and user.has_perm(PERMISSION)
    )


class BrowserCallConsumer(MediaStreamConsumer):
    """A :class:`MediaStreamConsumer` entered from the admin's softphone instead of Twilio."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.user: Any = None
        self.browser_call_sid = ""
        self.browser_call_pk: int | None = None
        self._start_seen = False
        self._pending_call_event: dict[str, Any] | None = None
        self._may_review = False

    async def websocket_connect(self, message: WebSocketConnectEvent) -> None:
        user = self.scope.get("user")
        allowed = await database_sync_to_async(may_place_browser_call)(user)
        if not allowed:
            logger.warning(
                "softphone handshake refused: %s is not staff with %s",
                getattr(user, "username", None) or "an anonymous user", PERMISSION,
            )
            await self.close()  # before accept: the upgrade is refused with HTTP 403
            return
        self.user = user
        await self.accept()

    async def receive_frame(self, text: str) -> None:
        if not self._start_seen and self.user is not None:
            text = await self.browser_start(text)
            if not text:
                return
        await super().receive_frame(text)

    async def browser_start(self, text: str) -> str:
        """Turn the page's ``start`` into the one the call needs; "" when refused.

        Anything before the call has started that is not a ``start`` passes as it is.
        """
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            return text
        if not isinstance(msg, dict) or msg.get("event") != "start":
            return text
        self._start_seen = True
        start = msg.get("start")
        start = start if isinstance(start, dict) else {}
        stream_sid = msg.get("streamSid")
        if not isinstance(stream_sid, str) or not _SID.fullmatch(stream_sid):
            logger.warning("softphone start without a usable streamSid: closing")
            await self.close(code=4400)
            return ""
        given = start.get("customParameters")
        given = given if isinstance(given, dict) else {}
        params = {
            str(k)[:100]: str(v)[:MAX_PARAMETER_LENGTH]
            for k, v in list(given.items())[:MAX_PARAMETERS]
            if str(k) not in RESERVED_PARAMETERS
        }
        agent_ref = str(given.get("agent") or "")
        call_sid = CALL_SID_PREFIX + secrets.token_hex(16)
        try:
            agent = await database_sync_to_async(self.create_browser_call)(
                call_sid, agent_ref, params
            )
        except DatabaseError:
            logger.exception("softphone call could not be recorded: closing")
            await self.close(code=1011)
            return ""
        if agent is None:
            logger.warning("softphone start for unknown or disabled agent %r: closing",
                           agent_ref[:100])
            await self.close(code=4404)
            return ""
        self.browser_call_sid = call_sid
        params.update(
            agent=str(agent.pk),
            to=f"agent:{agent.slug}",
            **{"from": self.caller_name()},
            direction="browser",
            user=str(self.user.pk),
        )
        start.update(
            accountSid="", callSid=call_sid, streamSid=stream_sid, customParameters=params
        )
        msg["start"] = start
        self._pending_call_event = {
            "callSid": call_sid, "agent": agent.slug, "feedPath": f"{SOCKET_PATH}{call_sid}/",
            "reviewUrl": _review_url(self.browser_call_pk) if self._may_review else "",
        }
        return json.dumps(msg)

    def caller_name(self) -> str:
        """What the call records as its caller ("browser:<username>")."""
        return f"browser:{self.user.get_username()}"[:128]

    def create_browser_call(self, call_sid: str, agent_ref: str, params: dict[str, str]) -> Any:
        """Record the call (``direction = browser``) for the agent named by slug or pk."""
        # Imported here, not at the top: the models need Django's app registry, and this module is
        # importable before it is ready.
        from voiceconv.models import Agent, Call

        agents = Agent.objects.filter(enabled=True)
        agent = agents.filter(slug=agent_ref).first()
        if agent is None and agent_ref.isdigit():
            agent = agents.filter(pk=int(agent_ref)).first()
        if agent is None and not agent_ref:
            agent = agents.filter(is_default=True).first()
        if agent is None:
            return None
        call = Call.objects.create(
            twilio_call_sid=call_sid,
            agent=agent,
            direction=Call.Direction.BROWSER,
            from_number=self.caller_name(),
            to_number=f"agent:{agent.slug}",
            status=Call.Status.RINGING,
            # Who placed it (the page cannot set ``user``): they may watch its live feed.
            custom_parameters={**params, "user": str(self.user.pk)},
            webhook_received_at=timezone.now(),
        )
        self.browser_call_pk = call.pk
        self._may_review = bool(self.user.has_perm(VIEW_PERMISSION))
        return agent

    def start_refusal(self, start: StreamStart) -> str | None:
        """The session user was checked at the handshake, and the server named the call;
        a stream token is never asked for (nor accepted) here."""
        if start.call_sid != self.browser_call_sid:
            return "not the call this softphone started"
        return None

    async def handle_start(self, start: StreamStart) -> None:
        await super().handle_start(start)
        event = self._pending_call_event
        if event is not None and self.info is not None and self._end_reason is None:
            self._pending_call_event = None
            await self.send_to_page({"event": "call", "streamSid": start.stream_sid,
                                     "call": event})

    async def send_to_page(self, message: dict[str, Any]) -> None:
        """Send one of the softphone's own messages (never on the audio path)."""
        if self._closed:
            return
        try:
            await self.base_send(
                cast("WebSocketSendEvent", {"type": "websocket.send", "text": json.dumps(message)})
            )
        except Exception as exc:
            logger.debug("softphone page gone: %s", exc)


def _review_url(call_pk: int | None) -> str:
    if call_pk is None:
        return ""
    try:
        return str(reverse("admin:voiceconv_call_change", args=[call_pk]))
    except NoReverseMatch:
        return ""
