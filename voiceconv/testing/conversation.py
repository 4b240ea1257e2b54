"""Conversation tests: an agent's behaviour written as a call, checked as plain pytest.

A :class:`Conversation` enters a call through the signed incoming-call webhook of a running
server (as Twilio would), says each caller line (text through espeak-ng, or a WAV file),
waits for each answer, hangs up and returns a :class:`ConversationResult` read from the
call's records: the transcript, the tool invocations, how the call ended, and timings::

    result = await (
        Conversation(server.http_url, auth_token=TOKEN, standin=model.standin)
        .say("What time is it?", reply=ScriptedResponse(
            text="", function_calls=[ScriptedFunctionCall("get_time")]))
        .run()
    )
    result.expect_tool("get_time")
    result.expect_transcript_contains("time", role="caller")

``reply=`` scripts the Realtime stand-in (ignored against the real model). The
``voiceconv_model`` fixture (``pytest_plugins = ["voiceconv.testing.conversation"]``) gives
the stand-in, or the real model for tests marked ``@pytest.mark.real_model`` when
``OPENAI_API_KEY`` is set (skipped with a reason otherwise).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
import wave
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError

from voiceconv.testing.audio import (
    SAMPLE_RATE,
    espeak_ulaw,
    speech_like,
    ulaw_decode,
    ulaw_encode,
)
from voiceconv.testing.live_server import GPTLiveStandIn, ScriptedLiveAnswer
from voiceconv.testing.realtime_server import RealtimeStandIn, ScriptedResponse
from voiceconv.testing.twilio_client import TwilioStreamClient

__all__ = [
    "Conversation",
    "ConversationResult",
    "ModelTarget",
    "WavError",
    "read_wav",
    "voiceconv_model",
    "write_wav",
]

#: How long the agent must stay quiet before its answer counts as finished (seconds).
ANSWER_QUIET_S = 1.2


class WavError(ValueError):
    """A WAV file that cannot be used as caller audio (the message says why)."""


def read_wav(path: str | os.PathLike[str]) -> bytes:
    """A PCM WAV file as 8 kHz mono μ-law: stereo is mixed down, other rates resampled.

    Raises :class:`WavError` for anything that is not a readable 8/16/24/32-bit PCM WAV.
    """
    try:
        with wave.open(str(path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            data = wav.readframes(wav.getnframes())
    except FileNotFoundError:
        raise WavError(f"{path}: no such file") from None
    except (wave.Error, EOFError) as exc:
        raise WavError(f"{path}: not a PCM WAV file ({exc})") from None
    if width not in (1, 2, 3, 4) or channels < 1 or rate < 1000:
        raise WavError(f"{path}: unsupported WAV ({width * 8}-bit, {channels} ch, {rate} Hz)")
    if not data:
        raise WavError(f"{path}: no audio")
    samples = _to_floats(data, width, channels)
    if rate != SAMPLE_RATE:
        samples = _resample(samples, rate, SAMPLE_RATE)
    pcm = bytearray()
    for s in samples:
        pcm += int(max(-32768, min(32767, round(s * 32767)))).to_bytes(2, "little", signed=True)
    return ulaw_encode(bytes(pcm))


def write_wav(path: str | os.PathLike[str], ulaw: bytes) -> None:
    """Save 8 kHz μ-law audio as a 16-bit PCM mono WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(SAMPLE_RATE)
        wav.writeframes(ulaw_decode(ulaw))


def _to_floats(data: bytes, width: int, channels: int) -> list[float]:
    frame = width * channels
    scale = float(1 << (8 * width - 1))
    out: list[float] = []
    for i in range(0, len(data) - frame + 1, frame):
        total = 0.0
        for c in range(channels):
            chunk = data[i + c * width : i + (c + 1) * width]
            value = chunk[0] - 128 if width == 1 else int.from_bytes(chunk, "little", signed=True)
            total += value / (128.0 if width == 1 else scale)
        out.append(total / channels)
    return out


def _resample(samples: list[float], rate: int, target: int) -> list[float]:
    """Windowed-sinc low-pass (below the lower Nyquist), then linear interpolation."""
    if rate > target:
        cutoff = 0.45 * target / rate
        taps = 31
        mid = taps // 2
        h = []
        for i in range(taps):
            x = i - mid
            sinc = 2 * cutoff if x == 0 else math.sin(2 * math.pi * cutoff * x) / (math.pi * x)
            h.append(sinc * (0.54 - 0.46 * math.cos(2 * math.pi * i / (taps - 1))))
        norm = sum(h)
        h = [v / norm for v in h]
        padded = [0.0] * mid + samples + [0.0] * mid
        samples = [
            sum(h[k] * padded[j + k] for k in range(taps)) for j in range(len(samples))
        ]
    step = rate / target
    n = int(len(samples) / step)
    out = []
    for m in range(n):
        pos = m * step
        i = int(pos)
        frac = pos - i
        nxt = samples[i + 1] if i + 1 < len(samples) else samples[i]
        out.append(samples[i] + (nxt - samples[i]) * frac)
    return out


#: What the stand-in answers a line with: one response, or several (a tool call, then the
#: answer the model gives with the tool's output); a string is a spoken answer.
Reply = ScriptedResponse | str | Sequence[ScriptedResponse | str] | None


@dataclass
class _Line:
    kind: str  # "say", "audio", "dtmf"
    text: str = ""
    audio: bytes = b""
    reply: Reply = None


@dataclass
class Turn:
    """One caller line and the agent's answer to it, with its latency."""

    said: str
    latency_ms: float | None
    answer_ms: float


@dataclass
class ConversationResult:
    """What happened in the call, read from its records once it ended."""

    call_sid: str
    transcript: list[dict[str, Any]]
    tool_calls: list[dict[str, Any]]
    end_reason: str
    time_to_first_audio_ms: float | None
    turns: list[Turn] = field(default_factory=list)
    reply_audio: bytes = b""
    closed_by_agent: bool = False

    def text(self, role: str | None = None) -> str:
        """The transcript as ``role: text`` lines (only ``role``'s when given)."""
        return "\n".join(
            f"{e['role']}: {e['text']}" for e in self.transcript if role in (None, e["role"])
        )

    def expect_transcript_contains(self, text: str, *, role: str | None = None) -> None:
        """Some turn (of ``role``) contains ``text``, case-insensitively."""
        wanted = text.lower()
        if not any(
            wanted in (e["text"] or "").lower()
            for e in self.transcript
            if role in (None, e["role"])
        ):
            raise AssertionError(
                f"no {role or 'any'} turn contains {text!r}; transcript:\n{self.text()}"
            )

    def expect_tool(self, name: str, **arguments: Any) -> dict[str, Any]:
        """``name`` was called, with at least these ``arguments`` (values or predicates)."""
        seen = []
        for call in self.tool_calls:
            if call["tool_name"] != name:
                continue
            try:
                args = json.loads(call["arguments"] or "{}")
            except ValueError:
                args = {}
            seen.append(args)
            if all(
                (want(args.get(key)) if callable(want) else args.get(key) == want)
                for key, want in arguments.items()
            ):
                return dict(call)
        called = [c["tool_name"] for c in self.tool_calls]
        raise AssertionError(
            f"tool {name} not called with {arguments}: calls {called}, {name} arguments {seen}"
        )

    def expect_no_tool(self, name: str) -> None:
        """``name`` was never called."""
        if any(c["tool_name"] == name for c in self.tool_calls):
            raise AssertionError(f"tool {name} was called: {self.tool_calls}")

    def expect_ended(self, reason: str | None = "agent_ended") -> None:
        """The agent ended the call (or it ended with ``reason``; None = any end)."""
        if reason is None and self.end_reason:
            return
        if self.end_reason != reason:
            raise AssertionError(f"call ended with {self.end_reason!r}, wanted {reason!r}")

    def expect_transferred(self, target: str | None = None) -> None:
        """The call was transferred (to ``target``, when given)."""
        self.expect_ended("transferred")
        if target is not None:
            self.expect_tool("transfer_call", target=target)

    def expect_first_audio_within(self, ms: float) -> None:
        """The agent's first audio came within ``ms`` of the call starting (a budget for
        your own tests against the real model)."""
        if self.time_to_first_audio_ms is None or self.time_to_first_audio_ms > ms:
            raise AssertionError(
                f"time to first audio {self.time_to_first_audio_ms} ms, budget {ms} ms"
            )


class Conversation:
    """A scripted caller: lines to say, then :meth:`run` the call through a server."""

    def __init__(
        self,
        server_url: str,
        *,
        auth_token: str | None = None,
        public_url: str | None = None,
        standin: RealtimeStandIn | GPTLiveStandIn | None = None,
        caller: str = "+14155550123",
        number: str = "+14155550100",
        greeting: ScriptedResponse | str | None = None,
        answer_timeout: float = 30.0,
        on_event: Any = None,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self.auth_token = auth_token
        self.public_url = public_url
        self.standin = standin
        self.caller = caller
        self.number = number
        self.greeting = greeting
        self.answer_timeout = answer_timeout
        self.on_event = on_event or (lambda kind, **data: None)
        self.lines: list[_Line] = []
        self.client: TwilioStreamClient | None = None

    # -- the script ----------------------------------------------------------------------

    def say(self, text: str, *, reply: Reply = None) -> Conversation:
        """Say ``text`` (espeak-ng speech; speech-like sound where espeak-ng is missing,
        which only the stand-in can take)."""
        self.lines.append(_Line("say", text=text, reply=reply))
        return self

    def play(
        self, wav: str | os.PathLike[str] | bytes, *, reply: Reply = None,
        label: str = "",
    ) -> Conversation:
        """Say the contents of a WAV file (or raw 8 kHz μ-law bytes)."""
        audio = wav if isinstance(wav, bytes) else read_wav(wav)
        self.lines.append(_Line("audio", text=label or str(wav)[:60], audio=audio, reply=reply))
        return self

    def press(self, digits: str, *, reply: Reply = None) -> Conversation:
        """Press keys on the keypad (DTMF)."""
        self.lines.append(_Line("dtmf", text=digits, reply=reply))
        return self

    # -- running it ----------------------------------------------------------------------

    def _script_standin(self) -> None:
        if self.standin is None:
            return
        replies: list[ScriptedResponse | str | None] = []
        for reply in [self.greeting, *(line.reply for line in self.lines)]:
            if isinstance(reply, (list, tuple)):
                replies.extend(reply)
            else:  # Reply's other Sequence members are not replies of their own
                replies.append(reply)  # type: ignore[arg-type]
        if self.greeting is None:
            replies = replies[1:]
        for item in replies:
            if isinstance(item, str):
                item = ScriptedResponse(text=item)
            if isinstance(self.standin, GPTLiveStandIn):  # the same answer, GPT-Live's way
                self.standin.answers.append(
                    ScriptedLiveAnswer(text=item.text, audio_ms=item.audio_ms) if item
                    else self.standin.default_answer)
            else:
                self.standin.responses.append(item or self.standin.default_response)

    async def run(self) -> ConversationResult:
        """Place the call, say every line, wait for every answer, hang up, read the records."""
        self._script_standin()
        client = await TwilioStreamClient.from_webhook(
            self.server_url, auth_token=self.auth_token, public_url=self.public_url,
            form={"From": self.caller, "To": self.number}, realtime=True,
        )
        self.client = client
        turns: list[Turn] = []
        started = time.monotonic()
        first_audio: float | None = None
        await client.start_call()
        self.on_event("started", call_sid=client.call_sid)
        try:
            if self.greeting is not None:
                await self._answer(client)
            for line in self.lines:
                if client.closed.is_set():
                    break
                self.on_event("say", line=line.text, line_kind=line.kind)
                before = len(client.media_records)
                if line.kind == "dtmf":
                    for digit in line.text:
                        await client.send_dtmf(digit)
                    await client.send_silence(200)
                else:
                    audio = line.audio or espeak_ulaw(line.text) or speech_like(
                        max(600, 60 * len(line.text)), seed=len(turns))
                    await client.send_audio(audio)
                said_at = time.monotonic()
                answer_ms = await self._answer(client)
                answer = [r for r in client.media_records[before:] if r.at >= said_at]
                latency = (answer[0].at - said_at) * 1000 if answer else None
                turns.append(Turn(line.text, latency, answer_ms))
                self.on_event("answered", line=line.text, latency_ms=latency,
                              answer_ms=answer_ms)
        finally:
            closed_by_agent = client.closed.is_set()
            await client.hang_up()
        if client.media_records:
            first_audio = (client.media_records[0].at - started) * 1000
        call = await _ended_call(client.call_sid)
        transcript, tools, reason = await _records(call)
        return ConversationResult(
            call_sid=client.call_sid, transcript=transcript, tool_calls=tools,
            end_reason=reason, time_to_first_audio_ms=first_audio, turns=turns,
            reply_audio=bytes(client.heard), closed_by_agent=closed_by_agent,
        )

    async def _answer(self, client: TwilioStreamClient) -> float:
        """Keep the line open (silence) until the agent has answered and gone quiet, the
        call closes or the timeout passes; returns the answer's audio length in ms."""
        before = client.received_bytes
        deadline = time.monotonic() + self.answer_timeout
        quiet_since: float | None = None
        last = before
        while time.monotonic() < deadline and not client.closed.is_set():
            await client.send_silence(100)
            now = time.monotonic()
            if client.received_bytes != last or client.queued_bytes:
                last = client.received_bytes
                quiet_since = None
            elif last > before:
                quiet_since = quiet_since or now
                if now - quiet_since >= ANSWER_QUIET_S:
                    break
        return (client.received_bytes - before) / 8


async def _ended_call(call_sid: str, timeout: float = 15.0) -> Any:
    """The call's row once finalised (None when this database does not have it)."""
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import Call

    deadline = time.monotonic() + timeout
    call = None
    while time.monotonic() < deadline:
        try:
            call = await Call.objects.filter(twilio_call_sid=call_sid).afirst()
        except DatabaseError:
            return None
        if call is not None and call.ended_at is not None:
            return call
        await asyncio.sleep(0.1)
    return call


async def _records(call: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]], str]:
    if call is None:
        return [], [], ""
    # Imported here, not at the top: the models need Django's app registry, and this module is
    # importable before it is ready.
    from voiceconv.models import ToolInvocation, TranscriptEntry

    entries = TranscriptEntry.objects.filter(call=call).order_by("sequence").values(
        "role", "text", "offset_ms", "latency_ms", "interrupted", "heard_text")
    transcript: list[dict[str, Any]] = [dict(e) async for e in entries]
    tools: list[dict[str, Any]] = [
        dict(t) async for t in ToolInvocation.objects.filter(call=call).order_by("pk").values(
            "tool_name", "arguments", "output", "error")
    ]
    end_reason: str = call.end_reason
    return transcript, tools, end_reason


# ---- pytest ----------------------------------------------------------------------------


@dataclass
class ModelTarget:
    """What a conversation test talks to: the stand-in, or the real model."""

    standin: RealtimeStandIn | None
    env: dict[str, str]

    @property
    def real(self) -> bool:
        return self.standin is None


def pytest_configure(config: Any) -> None:
    config.addinivalue_line(
        "markers", "real_model: a conversation test against the real OpenAI model "
        "(needs OPENAI_API_KEY; skipped without it)")


try:
    import pytest
    import pytest_asyncio
except ImportError:  # pragma: no cover - the plugin needs pytest
    pass
else:

    @pytest_asyncio.fixture
    async def voiceconv_model(request: Any) -> AsyncIterator[ModelTarget]:
        """The stand-in (``env`` points a server at it), or the real model for tests marked
        ``real_model`` when ``OPENAI_API_KEY`` is set (skipped otherwise)."""
        if request.node.get_closest_marker("real_model"):
            key = os.environ.get("OPENAI_API_KEY", "")
            if not key:
                pytest.skip("real_model test: set OPENAI_API_KEY to run it against OpenAI")
            yield ModelTarget(standin=None, env={"OPENAI_API_KEY": key})
            return
        port = int(os.environ.get("VOICECONV_STANDIN_PORT", "0") or 0)
        async with RealtimeStandIn(port=port, api_key="sk-standin") as standin:
            yield ModelTarget(
                standin=standin,
                env={"OPENAI_BASE_URL": standin.base_url, "OPENAI_API_KEY": "sk-standin"},
            )

