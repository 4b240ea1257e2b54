"""Call-length and idle-caller limits, counted in call time (Twilio's media clock)."""

from __future__ import annotations

from dataclasses import dataclass

#: A deadline that is never reached.
NEVER = 2**62


@dataclass(frozen=True, slots=True)
class Limits:
    """Call-length and idle-caller limits, in milliseconds of call time (0 = off)."""

    max_call_ms: int = 0
    warning_ms: int = 60_000
    idle_reprompt_ms: int = 0
    idle_hangup_ms: int = 0
    warning_instructions: str = (
        "Tell the caller briefly and politely that the call will have to end in about a "
        "minute, and help them finish."
    )
    goodbye_instructions: str = (
        "Tell the caller politely that you have to end the call now, and say goodbye."
    )
    reprompt_instructions: str = "The caller has been silent. Ask briefly if they are still there."


@dataclass(slots=True)
class LimitClock:
    """Where the call stands against its :class:`Limits`.

    ``limit_stage``: 0 before the end-of-call warning, 1 after it, 2 once the goodbye is due.
    ``idle_stage``: 0 while the caller is active, 1 once they were reprompted.
    """

    limits: Limits
    last_activity_ms: int = 0
    idle_stage: int = 0
    limit_stage: int = 0

    def activity(self, now_ms: int) -> None:
        """The caller did something: the idle clock starts again."""
        self.last_activity_ms = now_ms
        self.idle_stage = 0

    def next_deadline(self) -> int:
        """The next call time at which a limit has work to do."""
        lim = self.limits
        candidates = [NEVER]
        if lim.max_call_ms:
            if self.limit_stage == 0:
                candidates.append(max(0, lim.max_call_ms - lim.warning_ms))
            elif self.limit_stage == 1:
                candidates.append(lim.max_call_ms)
        if lim.idle_reprompt_ms and self.idle_stage == 0:
            candidates.append(self.last_activity_ms + lim.idle_reprompt_ms)
        elif lim.idle_hangup_ms and self.idle_stage == 1:
            candidates.append(self.last_activity_ms + lim.idle_hangup_ms)
        return min(candidates)

    def warning_due(self, now_ms: int) -> bool:
        lim = self.limits
        return bool(lim.max_call_ms) and self.limit_stage == 0 and (
            now_ms >= lim.max_call_ms - lim.warning_ms
        )

    def end_due(self, now_ms: int) -> bool:
        lim = self.limits
        return bool(lim.max_call_ms) and self.limit_stage == 1 and now_ms >= lim.max_call_ms

    def reprompt_due(self, now_ms: int) -> bool:
        lim = self.limits
        return bool(lim.idle_reprompt_ms) and self.idle_stage == 0 and (
            now_ms - self.last_activity_ms >= lim.idle_reprompt_ms
        )

    def idle_end_due(self, now_ms: int) -> bool:
        lim = self.limits
        return bool(lim.idle_hangup_ms) and self.idle_stage == 1 and (
            now_ms - self.last_activity_ms >= lim.idle_hangup_ms
        )
