"""Turn-taking and control: asking for responses, tool outputs, hang-ups and transfers.

:class:`Control` is a part of :class:`~voiceconv.session.core.CallSession`. It owns the rule that
at most one ``response.create`` is outstanding: a request made while a response is active is
queued (never skipped) and sent when that response is done, in order. Every hang-up or transfer
the core starts asks the I/O layer to arm a deadline (:class:`ArmHangupDeadline`); when it fires,
:meth:`Control.hangup_overdue` ends the call whatever is still playing.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from voiceconv.events import TranscriptTurn
from voiceconv.session import messages as msgs
from voiceconv.session.actions import (
    Action,
    ArmHangupDeadline,
    HangUp,
    Log,
    RecordTurn,
    SendToRealtime,
    ToolCall,
    ToolOutcome,
    Transfer,
)
from voiceconv.session.messages import dumps
from voiceconv.session.playback import Playback
from voiceconv.session.state import CallState

#: The plain ``response.create``: answer the conversation as it stands.
RESPONSE_CREATE = '{"type":"response.create"}'
#: The output recorded for a function call cut short by the end of the call.
TOOL_CANCELLED_OUTPUT = '{"error":"cancelled: the call ended"}'
#: How a holding line is asked for while a slow tool runs.
HOLDING_TEMPLATE = "Say only this, briefly, in your own voice: {message}"
#: Asked of a new session when the line dropped after the caller's turn was committed but
#: before its transcript or any answer arrived: the words went with the old session.
LOST_TURN_INSTRUCTIONS = (
    "The line dropped for a moment just as the caller finished speaking, and their last words "
    "were lost. Apologise briefly and ask them to say it again."
)


class Control:
    """Responses, tools and the end of the call (the state lives on the session)."""

    state: CallState
    playback: Playback
    history: deque[tuple[str, str]]
    _queued: deque[str]
    _last_request: str
    _last_request_queued: bool
    _running: dict[str, ToolCall]
    _open_calls: set[str]
    _known_calls: dict[str, tuple[int, str | None]]
    _turn_unanswered: bool

    # ----------------------------------------------------------------- responses

    def _create(self, text: str, *, queue: bool) -> list[Action]:
        """Send ``response.create`` ``text`` now, or queue it behind the active response."""
        st = self.state
        if st.response_active or not st.realtime_ready:
            if queue and not (text == RESPONSE_CREATE and RESPONSE_CREATE in self._queued):
                self._queued.append(text)
            st.response_create_owed = bool(self._queued)
            return []
        st.response_active = True
        self._last_request = text
        self._last_request_queued = queue
        return [SendToRealtime(text)]

    def _request_response(self) -> list[Action]:
        return self._create(RESPONSE_CREATE, queue=True)

    def _next_queued(self) -> list[Action]:
        """The active response is done: send the next queued request, if any."""
        st = self.state
        if not self._queued or st.tools_running or st.response_active:
            return []
        text = self._queued.popleft()
        st.response_create_owed = bool(self._queued)
        return self._create(text, queue=True)

    def _collided(self) -> list[Action]:
        """Our ``response.create`` met a response we had not seen yet: ask again after it.

        A request that may be queued (an answer to the caller or to a tool's output, the
        end-of-call warning and goodbye) is sent again, first, once that response is done; a
        holding line is dropped (the model is talking anyway). Either way the server has a
        response active, so nothing else is sent until it is done.
        """
        text = self._last_request
        self._last_request = ""
        self.state.response_active = True  # the server has one active
        if text and self._last_request_queued:
            self._queued.appendleft(text)
            self.state.response_create_owed = True
            return [Log("info", "response request met an active response: asking again "
                                "once it is done")]
        return []

    def _resume(self) -> list[Action]:
        """A new Realtime session is ready after a drop: owed requests, or an unanswered turn."""
        if self._queued:
            return self._next_queued()
        if self.history and self.history[-1][0] in ("user", "function_call_output"):
            self._turn_unanswered = False
            return self._request_response()
        if self._turn_unanswered:
            self._turn_unanswered = False
            return self._create(
                dumps({"type": "response.create",
                       "response": {"instructions": LOST_TURN_INSTRUCTIONS}}),
                queue=True,
            )
        return []

    def say(
        self, instructions: str, *, queue: bool = False, reasoning_effort: str | None = None
    ) -> list[Action]:
        """Ask the model to say something outside the conversation.

        With ``queue`` (the end-of-call warning and goodbye) the request waits for an active
        response to end; without it (a holding line) it is dropped when the model is talking.
        ``reasoning_effort`` overrides the session's for this response.
        """
        response: dict[str, Any] = {"instructions": instructions, "conversation": "none"}
        if reasoning_effort:
            response["reasoning"] = {"effort": reasoning_effort}
        text = dumps({"type": "response.create", "response": response})
        return self._create(text, queue=queue)

    def holding_line(self, message: str) -> list[Action]:
        """A tool is slow: the caller hears ``message`` (if the model is not talking anyway)."""
        return self.say(HOLDING_TEMPLATE.format(message=message))

    # ----------------------------------------------------------------- tools

    def tool_results(self, results: list[ToolOutcome]) -> list[Action]:
        """Outputs of a fan-out: each goes back to the model, then one ``response.create``.

        See ``docs/protocols.md`` §R6.
        """
        st = self.state
        st.tools_running = max(0, st.tools_running - len(results))
        actions: list[Action] = []
        for r in results:
            actions.append(self._tool_turn(r))
            if r.call_id not in self._known_calls:
                actions.append(Log("warning", f"output of {r.name} ({r.call_id}) dropped: "
                                              "no Realtime session asked for it"))
                continue
            # After a reconnect the call is in the new session too (re-seeded): answer it there.
            self._open_calls.discard(r.call_id)
            self.history.append(
                ("function_call_output", dumps({"call_id": r.call_id, "output": r.output}))
            )
            actions.append(SendToRealtime(msgs.tool_output_item(r.call_id, r.output)))
        if st.tools_running == 0:
            # Also before a transfer: the model announces it, and the caller hears that first.
            actions.extend(self._request_response())
        actions.extend(self._maybe_hang_up())
        return actions

    def _tool_turn(self, r: ToolOutcome) -> RecordTurn:
        """The transcript entry of one function call, where it was called (its item)."""
        self._running.pop(r.call_id, None)
        called_ms, item_id = self._known_calls.get(r.call_id, (self.state.now_ms, None))
        return RecordTurn(
            TranscriptTurn(
                role="tool",
                text=f"{r.name}({r.arguments}) → {r.error or r.output}",
                item_id=item_id,
                offset_ms=called_ms,
            )
        )

    def tools_ended(self, results: list[ToolOutcome]) -> list[Action]:
        """The call ends while these function calls run (or just gave their outputs): each is
        recorded with its outcome (``error="cancelled"`` for one cut short); nothing is sent."""
        self.state.tools_running = max(0, self.state.tools_running - len(results))
        return [self._tool_turn(r) for r in results]

    def cancelled_tools(self) -> list[ToolOutcome]:
        """Function calls still running: their outcome is ``cancelled`` (the call ended)."""
        return [
            ToolOutcome(c.call_id, c.name, c.arguments, output=TOOL_CANCELLED_OUTPUT,
                        error="cancelled")
            for c in self._running.values()
        ]

    # ----------------------------------------------------------------- the end

    def request_hangup(self, reason: str = "agent_ended") -> list[Action]:
        """End the call once everything the agent says has been heard (within a deadline)."""
        st = self.state
        first = st.hangup_reason is None
        st.hangup_reason = reason
        actions: list[Action] = [ArmHangupDeadline()] if first and not st.ended else []
        actions.extend(self._maybe_hang_up())
        return actions

    def request_transfer(self, target: str) -> list[Action]:
        """Transfer the call once what is being said has been heard (within a deadline)."""
        self.state.transfer_target = target
        return self.request_hangup("transferred")

    def hangup_overdue(self) -> list[Action]:
        """The hang-up deadline passed: end the call now, whatever is still playing."""
        st = self.state
        if st.ended or st.hangup_reason is None:
            return []
        st.ended = True
        actions: list[Action] = [
            Log("warning", "goodbye not heard in time; ending the call anyway")
        ]
        if st.transfer_target is not None:
            actions.append(Transfer(st.transfer_target))
        else:
            actions.append(HangUp(st.hangup_reason))
        return actions

    def _maybe_hang_up(self) -> list[Action]:
        st = self.state
        if st.hangup_reason is None or st.ended:
            return []
        if self.playback.playing() or st.server_playing or st.tools_running:
            return []
        if st.response_active or st.response_create_owed or self._queued:
            return []
        st.ended = True
        if st.transfer_target is not None:
            return [Transfer(st.transfer_target)]
        return [HangUp(st.hangup_reason)]

    def busy(self) -> bool:
        """The agent is talking, about to, or waiting on a tool."""
        st = self.state
        return bool(self.playback.playing() or st.server_playing or st.response_active
                    or st.response_create_owed or self._queued or st.tools_running)
