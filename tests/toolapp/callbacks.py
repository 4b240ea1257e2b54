"""Transcript callbacks for end-to-end servers: append what they get to $CALLBACK_LOG."""

from __future__ import annotations

import json
import os
from typing import Any


def _write(kind: str, text: str, info: Any) -> None:
    path = os.environ.get("CALLBACK_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"kind": kind, "text": text, "call_sid": info.call_sid}) + "\n")


def on_user_message(text: str, info: Any) -> None:
    """A sync callback, as in the package voiceconv descends from."""
    _write("user", text, info)


async def on_assistant_message(text: str, info: Any) -> None:
    """An async callback."""
    _write("assistant", text, info)
