"""Conversation items in the stand-in: create, delete, retrieve, truncate.

See ``docs/protocols.md`` §R4 and §S.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from voiceconv.testing.realtime_server.config import (
    _new_id,
)
from voiceconv.testing.realtime_server.protocol import (
    _ClientError,
)

if TYPE_CHECKING:
    pass

from voiceconv.testing.realtime_server.base import SessionBase
from voiceconv.testing.realtime_server.items import Item

__all__ = ["ConversationItems"]


class ConversationItems(SessionBase):
    """The conversation's items and their client events."""

    # ---- conversation items ----------------------------------------------------------

    async def _add_item(self, item: Item, previous: str | None) -> None:
        self.items[item.id] = item
        self.item_order.append(item.id)
        await self._emit(
            {
                "type": "conversation.item.added",
                "previous_item_id": previous,
                "item": copy.deepcopy(item.data),
            }
        )
        await self._emit(
            {
                "type": "conversation.item.done",
                "previous_item_id": previous,
                "item": copy.deepcopy(item.data),
            }
        )

    async def _handle_conversation_item_create(self, event: dict[str, Any]) -> None:
        data = copy.deepcopy(event["item"])
        previous = event.get("previous_item_id")
        if previous not in (None, "root") and previous not in self.items:
            raise _ClientError(
                "invalid_value",
                f"Invalid 'previous_item_id': '{previous}'. No such item in the conversation.",
                param="previous_item_id",
            )
        item_id = data.get("id") or _new_id("item")
        if item_id in self.items:
            raise _ClientError(
                "invalid_value",
                f"Item with id '{item_id}' already exists.",
                param="item.id",
            )
        if data.get("type") == "function_call_output":
            known = {i.call_id for i in self.items.values() if i.type == "function_call"}
            if data.get("call_id") not in known:
                self.protocol_violations.append(
                    f"client: function_call_output for unknown call_id {data.get('call_id')!r}"
                )
        data["id"] = item_id
        data.setdefault("object", "realtime.item")
        data.setdefault("status", "completed")
        if previous is None:
            previous = self.item_order[-1] if self.item_order else None
        elif previous == "root":
            previous = None
        item = Item(
            id=item_id,
            type=data.get("type", ""),
            role=data.get("role"),
            call_id=data.get("call_id"),
            data=data,
        )
        await self._add_item(item, previous)

    async def _handle_conversation_item_delete(self, event: dict[str, Any]) -> None:
        item_id = event["item_id"]
        if item_id not in self.items:
            raise _ClientError(
                "invalid_value",
                f"Item with item_id not found: {item_id}",
                param="item_id",
            )
        del self.items[item_id]
        self.item_order.remove(item_id)
        await self._emit({"type": "conversation.item.deleted", "item_id": item_id})

    async def _handle_conversation_item_retrieve(self, event: dict[str, Any]) -> None:
        item = self.items.get(event["item_id"])
        if item is None:
            raise _ClientError(
                "invalid_value",
                f"Item with item_id not found: {event['item_id']}",
                param="item_id",
            )
        await self._emit({"type": "conversation.item.retrieved", "item": copy.deepcopy(item.data)})

    async def _handle_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        item_id, end_ms = event["item_id"], int(event["audio_end_ms"])
        item = self.items.get(item_id)
        if item is None or item.role != "assistant" or not item.has_audio:
            self.truncates.append((item_id, end_ms, False))
            if item is None:
                raise _ClientError(
                    "invalid_value",
                    f"Item with item_id not found: {item_id}",
                    param="item_id",
                )
            raise _ClientError(
                "invalid_value",
                "Only model output audio messages can be truncated",
                param="item_id",
            )
        if end_ms > item.audio_ms or end_ms < 0:
            self.truncates.append((item_id, end_ms, False))
            raise _ClientError(
                None,
                f"Audio content of {item.audio_ms}ms is already shorter than {end_ms}ms",
                attribute=False,
            )
        self.truncates.append((item_id, end_ms, True))
        item.audio_bytes = end_ms * item.bytes_per_ms
        item.transcript = ""
        for part in item.data.get("content", []):
            part["transcript"] = ""
        await self._emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item_id,
                "content_index": int(event.get("content_index", 0)),
                "audio_end_ms": end_ms,
            }
        )

    async def _handle_output_audio_buffer_clear(self, event: dict[str, Any]) -> None:
        self.protocol_violations.append("client: output_audio_buffer.clear on a WebSocket")
        raise _ClientError(
            "invalid_value",
            "output_audio_buffer.clear is only supported for WebRTC and SIP.",
        )
