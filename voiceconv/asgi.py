"""Twilio's webhooks through Django without the project's HTTP middleware (opt-in).

Under ASGI, each middleware written the classic way (``MiddlewareMixin``: Django's own
security, session, CSRF, auth, messages and clickjacking middleware among them) runs its
``process_request`` and ``process_response`` through ``sync_to_async`` in the one thread the
process shares for thread-sensitive work: with Django's default stack that is about a dozen
hops per request. Twilio's webhooks need none of that middleware (they are signed, exempt
from CSRF, and carry no session), and in a burst of calls those hops are what a caller waits
on: in the benchmark's 50-call burst the webhook's p99 fell to about a third without them.

:class:`WebhookFastPath` wraps the project's Django ASGI application. Requests for
voiceconv's signed webhook routes (:data:`FAST_ROUTES`, wherever the project includes
``voiceconv.urls``) go through a Django handler with no middleware; ``ALLOWED_HOSTS`` is still
enforced. Everything else (the admin, the metrics endpoint, the project's own pages) goes to the
wrapped application unchanged::

    application = DrainingMiddleware(ProtocolTypeRouter({
        "http": WebhookFastPath(django_asgi_app),
        "websocket": URLRouter(websocket_urlpatterns),
    }))

Leave it out when a middleware of the project's own must see Twilio's webhooks too (request
logging, tenant routing): they then go through the full stack, as any other request.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.exception import convert_exception_to_response
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, resolve

__all__ = ["FAST_ROUTES", "WebhookFastPath", "WebhookHandler"]

#: voiceconv's routes that take the fast path: each is signed by its caller (Twilio, or OpenAI
#: for the SIP webhook), exempt from CSRF, and reads no session.
FAST_ROUTES = frozenset({
    "incoming-call", "call-status", "outbound-answer", "amd-status", "warm-transfer-status",
    "recording-status", "sip-incoming",
})


class WebhookHandler(ASGIHandler):
    """Django's ASGI handler with an empty middleware chain (``ALLOWED_HOSTS`` still checked)."""

    def load_middleware(self, is_async: bool = False) -> None:
        self._view_middleware: list[Any] = []
        self._template_response_middleware: list[Any] = []
        self._exception_middleware: list[Any] = []
        # BaseHandler's own response step (URL resolution, the view); the stubs lack it.
        step = "_get_response_async"
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = getattr(self, step)

        async def checked(request: HttpRequest) -> HttpResponseBase:
            request.get_host()  # DisallowedHost → 400, as CommonMiddleware would have it
            response: HttpResponseBase = await get_response(request)
            return response

        self._middleware_chain = convert_exception_to_response(checked)


ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


class WebhookFastPath:
    """Send voiceconv's webhooks to :class:`WebhookHandler`, everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.webhooks = WebhookHandler()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "http" and scope.get("method") == "POST" and is_fast_route(
            _path_info(scope)
        ):
            await self.webhooks(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _path_info(scope: Any) -> str:
    path: str = scope.get("path", "")
    prefix = get_script_prefix(scope)
    return path.removeprefix(prefix.rstrip("/")) if prefix and prefix != "/" else path


@functools.lru_cache(maxsize=512)
def is_fast_route(path_info: str) -> bool:
    """Whether ``path_info`` resolves to one of voiceconv's :data:`FAST_ROUTES`."""
    try:
        match = resolve(path_info)
    except Resolver404:
        return False
    return "voiceconv" in match.namespaces and match.url_name in FAST_ROUTES


def _urlconf_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == "ROOT_URLCONF":
        is_fast_route.cache_clear()


setting_changed.connect(_urlconf_changed, dispatch_uid="voiceconv.asgi.urlconf")
