"""The call's state as the core keeps it (public for inspection in tests)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class CallState:
    """Everything about the call the core keeps that callers may read."""

    stream_sid: str = ""
    call_sid: str = ""
    account_sid: str = ""
    custom_parameters: dict[str, str] = field(default_factory=dict)
    started: bool = False
    ended: bool = False
    #: Last inbound ``media.timestamp`` (call time, ms).
    now_ms: int = 0
    realtime_ready: bool = False
    response_active: bool = False
    active_response_id: str | None = None
    #: A ``response.create`` is owed once the active response is done.
    response_create_owed: bool = False
    tools_running: int = 0
    #: Between ``speech_started`` and ``speech_stopped``: the caller is talking.
    caller_speaking: bool = False
    #: Calls without media: the service is playing assistant audio to the caller
    #: (between ``output_audio_buffer.started`` and ``.stopped``/``.cleared``).
    server_playing: bool = False
    hangup_reason: str | None = None
    transfer_target: str | None = None
    frames_in: int = 0
    frames_out: int = 0
    frames_dropped_early: int = 0
