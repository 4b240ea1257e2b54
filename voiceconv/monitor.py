"""The admin's live monitor: the live-call list and a live call's conversation, as it happens.

:class:`LiveMonitorConsumer` is the page's WebSocket. It is routed behind
``AllowedHostsOriginValidator`` and ``AuthMiddlewareStack`` (see :mod:`voiceconv.routing`) and
checks on connect that the user is active staff with ``voiceconv.view_call``, or, for one
call's feed, that the user placed that call from the browser softphone and still has
``voiceconv.place_browser_call`` (the softphone shows its own call's feed through this very
socket); anyone else is closed (4403) before anything is sent. Its messages come through the
channel layer (the call's feed group, or the list group), so the page works whichever process
serves it and whichever holds the call. Staff who also have ``voiceconv.control_call`` can send
control requests through it (hang up, say, whisper, transfer to a number the agent allows);
they go through :mod:`voiceconv.control` like any other, recorded with the user's name.
"""

from __future__ import annotations

import logging
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path
from django.utils.translation import gettext as _

from voiceconv import control
from voiceconv.live import LIST_GROUP, call_summary, entry_event, feed_group, live_calls

logger = logging.getLogger("voiceconv.monitor")

VIEW_PERMISSION = "voiceconv.view_call"
CONTROL_PERMISSION = "voiceconv.control_call"
#: Lets staff call agents from the browser softphone, and watch the calls they placed.
PLACE_CALL_PERMISSION = "voiceconv.place_browser_call"
#: Actions the monitor's buttons send (the rest of voiceconv.control stays with code).
MONITOR_ACTIONS = frozenset({"hang_up", "say", "whisper", "transfer"})
#: Path of the monitor's websocket routes (see voiceconv.routing).
SOCKET_PATH = "/voiceconv/live/"


def may_watch(user: Any) -> bool:
    return bool(user is not None and getattr(user, "is_authenticated", False)
                and user.is_active and user.is_staff and user.has_perm(VIEW_PERMISSION))


def may_control(user: Any) -> bool:
    return may_watch(user) and bool(user.has_perm(CONTROL_PERMISSION))


def placed_from_the_browser(user: Any, call: Any) -> bool:
    """Whether ``user`` placed ``call`` from the browser softphone and still may place such
    calls (active staff with ``voiceconv.place_browser_call``).

    The softphone's consumer records the caller's primary key as the custom parameter
    ``user``, which the page itself cannot set.
    """
    params = getattr(call, "custom_parameters", None)
    return bool(
        call is not None
        and call.direction == "browser"
        and isinstance(params, dict)
        and user is not None
        and getattr(user, "is_authenticated", False)
        and str(params.get("user", "")) == str(user.pk)
        and user.is_active
        and user.is_staff
        and user.has_perm(PLACE_CALL_PERMISSION)
    )


def may_watch_call(user: Any, call_sid: str) -> bool:
    """Whether ``user`` may watch this call's feed: with ``voiceconv.view_call``, or as the
    one who placed it from the browser softphone."""
    if may_watch(user):
        return True
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import Call

    call = (Call.objects.filter(twilio_call_sid=call_sid)
            .only("pk", "direction", "custom_parameters").first())
    return placed_from_the_browser(user, call)


def allowed_transfer_targets(call: Any) -> list[str]:
    """The targets offered as transfer buttons: the exact entries (not the ``*`` prefixes) of
    the agent's transfer allow-list, or, when its enabled ``transfer_call`` tool's schema
    override has a ``target`` enum, those of its entries the allow-list has."""
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import AgentTelephony

    if call is None or not call.agent_id:
        return []
    telephony = AgentTelephony.for_agent(call.agent)
    definition = call.agent.tools.filter(name="transfer_call", enabled=True).first()
    schema = (definition.parameters_override or {}) if definition is not None else {}
    target = (schema.get("properties") or {}).get("target") or {}
    enum = target.get("enum") if isinstance(target, dict) else None
    if isinstance(enum, list):
        return [str(t) for t in enum if telephony.allows_transfer_to(str(t))]
    return [t for t in telephony.transfer_allow_list() if not t.endswith("*")]


def _snapshot(call_sid: str | None) -> dict[str, Any]:
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import Call

    if call_sid is None:
        return {"event": "snapshot", "calls": [call_summary(c) for c in live_calls()]}
    call = Call.objects.select_related("agent").filter(twilio_call_sid=call_sid).first()
    if call is None:
        return {"event": "snapshot", "call": None, "turns": []}
    live = live_calls().filter(pk=call.pk).exists()
    return {
        "event": "snapshot",
        "call": {**call_summary(call), "live": live},
        "turns": [entry_event(e) for e in call.transcript_entries.order_by("sequence")],
    }


class LiveMonitorConsumer(AsyncJsonWebsocketConsumer):
    """The monitor page's socket: ``…/live/`` (the list) or ``…/live/<CallSid>/`` (one call)."""

    call_sid: str | None = None
    group: str | None = None
    can_control = False

    async def connect(self) -> None:
        user = self.scope.get("user")
        route = self.scope.get("url_route")
        self.call_sid = route["kwargs"].get("call_sid") if route else None
        call_sid = self.call_sid
        allowed, self.can_control = await database_sync_to_async(
            lambda: (may_watch_call(user, call_sid) if call_sid else may_watch(user),
                     may_control(user))
        )()
        if not allowed:
            logger.warning("live monitor refused: %s is not staff with %s%s",
                           getattr(user, "username", None) or "anonymous", VIEW_PERMISSION,
                           " (nor placed this call from the softphone)" if call_sid else "")
            await self.close(code=4403)
            return
        self.user = user
        self.group = feed_group(self.call_sid) if self.call_sid else LIST_GROUP
        if self.channel_layer is None:
            await self.close(code=4500)
            return
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        snapshot = await database_sync_to_async(_snapshot)(self.call_sid)
        snapshot["can_control"] = self.can_control
        await self.send_json(snapshot)

    async def disconnect(self, code: int) -> None:
        if self.group and self.channel_layer is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def voiceconv_feed(self, message: dict[str, Any]) -> None:
        await self.send_json(message["event"])

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        request_id = content.get("id") if isinstance(content, dict) else None

        async def answer(ok: bool, detail: str) -> None:
            await self.send_json(
                {"event": "control_result", "id": request_id, "ok": ok, "detail": detail}
            )

        if not self.can_control:
            logger.warning("live monitor: control refused to %s (no %s)",
                           getattr(self.user, "username", "?"), CONTROL_PERMISSION)
            await answer(False, _("You do not have permission to control calls."))
            return
        action = content.get("action") if isinstance(content, dict) else None
        args = content.get("args") if isinstance(content, dict) else None
        if not self.call_sid or action not in MONITOR_ACTIONS or not isinstance(args, dict):
            await answer(False, _("Not a control request for this call."))
            return
        if action == "transfer":
            targets = await database_sync_to_async(self._targets)()
            if str(args.get("target")) not in targets:
                await answer(False, _("The agent does not allow a transfer to that number."))
                return
        try:
            result = await control.arequest(self.call_sid, action, args, by=self.user)
        except (control.ControlError, ValueError) as exc:
            await answer(False, str(exc))
            return
        await answer(result.accepted, result.detail or (_("Done.") if result else ""))

    def _targets(self) -> list[str]:
        # Imported here, not at the top: the models need Django's app registry, and this module is
        # importable before it is ready.
        from voiceconv.models import Call

        return allowed_transfer_targets(
            Call.objects.select_related("agent").filter(twilio_call_sid=self.call_sid).first()
        )


# --- the admin pages ----------------------------------------------------------------------


def live_context(request: HttpRequest, call: Any) -> dict[str, Any]:
    """Context the call's change page adds when the call is live (else nothing)."""
    if call is None or not live_calls().filter(pk=call.pk).exists():
        return {}
    return {
        "live_call": call_summary(call),
        "live_socket": SOCKET_PATH + call.twilio_call_sid + "/",
        "can_control": may_control(request.user),
        "transfer_targets": allowed_transfer_targets(call),
    }


def admin_urls(model_admin: admin.ModelAdmin[Any]) -> list[URLPattern]:
    """URLs the call admin adds: ``live/``, the list of live calls."""

    def live_list(request: HttpRequest) -> HttpResponse:
        if not may_watch(request.user):
            return HttpResponse(status=403)
        context = {
            **model_admin.admin_site.each_context(request),
            "opts": model_admin.model._meta,
            "title": _("Live calls"),
            "live_socket": SOCKET_PATH,
            "calls": [call_summary(c) for c in live_calls()],
        }
        return TemplateResponse(request, "admin/voiceconv/call/live_calls.html", context)

    return [
        path("live/", model_admin.admin_site.admin_view(live_list), name="voiceconv_call_live"),
    ]
