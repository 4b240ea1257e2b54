"""The example project with one more middleware, which notes every request it sees."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from project.settings import *  # noqa: F403
from project.settings import MIDDLEWARE

MIDDLEWARE = [*MIDDLEWARE, "tests.fast_path_settings.NotingMiddleware"]


class NotingMiddleware:
    """Appends ``METHOD path`` of each request to the file named by ``NOTED_REQUESTS``."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: Any) -> Any:
        with open(os.environ["NOTED_REQUESTS"], "a", encoding="utf-8") as log:
            log.write(f"{request.method} {request.path}\n")
        return self.get_response(request)
