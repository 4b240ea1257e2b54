"""``manage.py voiceconv_call``: talk to an agent from the command line, no phone needed.

Places a simulated call the way Twilio does (signed incoming-call webhook, then the media
stream over a real WebSocket) through a running server (``--server URL``) or in-process: the
project's ASGI application served on a loopback port inside this command's own process
(:class:`voiceconv.testing.inprocess.InProcessServer`), stopped once the call is over and its
records written. It says each ``--say`` line (espeak-ng) and ``--wav`` file, presses
``--dtmf`` keys, waits for every answer, prints the transcript with timings and saves what the
agent said (``--record reply.wav``). The model is the real one (``OPENAI_API_KEY``) or, with
``--standin``, the stand-in of the agent's speech backend (Realtime or GPT-Live).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import sys
import urllib.error
from collections.abc import Iterator
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.http.request import validate_host
from django.test.utils import override_settings
from django.utils.module_loading import import_string

from voiceconv import security
from voiceconv.conf import voiceconv_settings
from voiceconv.models import Agent


class Command(BaseCommand):
    help = "Call an agent through the webhook and stream, as Twilio would, and print the talk."
    conversation: Any = None
    # Run by handle(), which knows whether the project's own Twilio token matters.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agent", help="slug of the agent to call (default: the default)")
        parser.add_argument("--say", action="append", default=[], metavar="TEXT",
                            help="a line to say (espeak-ng); repeatable")
        parser.add_argument("--wav", action="append", default=[], metavar="FILE",
                            help="a WAV file to say; repeatable (after the --say lines)")
        parser.add_argument("--dtmf", default="", metavar="DIGITS", help="keys to press last")
        parser.add_argument("--record", metavar="FILE", help="save what the agent said (WAV)")
        parser.add_argument("--server", metavar="URL",
                            help="a running server (http://127.0.0.1:8000); default: serve the "
                                 "project in this process")
        parser.add_argument("--standin", action="store_true",
                            help="talk to the stand-in of the agent's backend (Realtime or "
                                 "GPT-Live) instead of OpenAI")
        parser.add_argument("--timeout", type=float, default=30.0,
                            help="longest wait for an answer (s)")

    def handle(self, *args: Any, **options: Any) -> None:
        # Imported here: voiceconv.testing needs the test dependencies (pytest-asyncio), so the
        # command's module (and its --help) loads without them.
        from voiceconv.testing.conversation import WavError, read_wav

        if not options.get("skip_checks"):
            # Served in this process, the call is signed with a token of its own when the
            # project has none: voiceconv.W002 (no TWILIO_AUTH_TOKEN) does not apply.
            moot = [] if options["server"] or security.auth_token() else ["voiceconv.W002"]
            with override_settings(
                SILENCED_SYSTEM_CHECKS=[*settings.SILENCED_SYSTEM_CHECKS, *moot]
            ):
                self.check()
        if options["server"] and options["standin"]:
            raise CommandError(
                "--standin needs the project served in this process (no --server); for your own "
                "server, start python -m voiceconv.testing.realtime_server (or .live_server for "
                "GPT-Live agents) and point its OPENAI_BASE_URL at it"
            )
        key = os.environ.get("OPENAI_API_KEY") or getattr(settings, "OPENAI_API_KEY", "")
        if not options["server"] and not options["standin"] and not key:
            raise CommandError(
                "OPENAI_API_KEY is not set: set it to call the real model, or pass --standin"
            )
        wavs = []
        for path in options["wav"]:
            try:
                wavs.append((path, read_wav(path)))
            except WavError as exc:
                raise CommandError(f"bad WAV: {exc}") from None
        if not (options["say"] or wavs or options["dtmf"]):
            options["say"] = ["Hello, what can you do?"]
        if options["say"] and not shutil.which("espeak-ng"):
            self.stderr.write("espeak-ng is not installed: --say lines are sent as speech-like "
                              "sound, which only the stand-in understands")
        number = self.agent_number(options["agent"])
        options["gpt_live"] = self.agent_backend(options["agent"]) == "gpt-live"
        try:
            asyncio.run(self.call(options, wavs, number))
        except (urllib.error.URLError, ConnectionError, OSError) as exc:
            if options["server"]:
                raise CommandError(f"server unreachable: {exc}") from None
            raise CommandError(f"the call through the in-process server failed: {exc}") from None

    def agent_number(self, slug: str | None) -> str:
        """The number to dial for the agent (the default agent answers any other number)."""
        if not slug:
            return "+15005550006"
        agent = Agent.objects.filter(slug=slug).first()
        if agent is None or not agent.enabled:
            raise CommandError(f"no enabled agent with slug {slug!r}")
        numbers = agent.number_list()
        if numbers:
            return numbers[0]
        if agent.is_default:
            return "+15005550006"
        raise CommandError(
            f"agent {slug!r} answers no phone number and is not the default agent: give it a "
            "number in the admin, or call it from its admin page (the browser softphone)"
        )

    def agent_backend(self, slug: str | None) -> str:
        """The speech backend of the agent called (the default agent's without a slug)."""
        agent = (Agent.objects.filter(slug=slug) if slug
                 else Agent.objects.filter(is_default=True, enabled=True)).first()
        return str(agent.backend) if agent is not None else "realtime"

    async def call(self, options: dict[str, Any], wavs: list[tuple[str, bytes]],
                   number: str) -> None:
        """Place the call; Ctrl-C or SIGTERM hangs it up (its records are written), a second
        one stops at once."""
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        interrupted: list[int] = []
        handled = (signal.SIGINT, signal.SIGTERM)

        def on_signal(sig: int) -> None:
            if interrupted:
                self.stderr.write("stopping at once")
                signal.signal(sig, signal.SIG_DFL)
                os.kill(os.getpid(), sig)
                return
            interrupted.append(sig)
            self.stderr.write("hanging up (again to stop at once)")
            if main is not None:
                main.cancel()

        for sig in handled:
            with contextlib.suppress(NotImplementedError):  # no loop signal handlers on Windows
                loop.add_signal_handler(sig, on_signal, sig)
        try:
            await self.place_call(options, wavs, number)
        except asyncio.CancelledError:
            if not interrupted:
                raise
            client = self.conversation.client if self.conversation is not None else None
            raise CommandError(
                f"interrupted ({signal.Signals(interrupted[0]).name}): "
                + (f"call {client.call_sid} hung up and recorded" if client is not None
                   else "no call was placed")
            ) from None
        finally:
            for sig in handled:
                with contextlib.suppress(NotImplementedError):
                    loop.remove_signal_handler(sig)

    async def place_call(self, options: dict[str, Any], wavs: list[tuple[str, bytes]],
                         number: str) -> None:
        # Imported here: voiceconv.testing needs the test dependencies (pytest-asyncio), so the
        # command's module (and its --help) loads without them.
        from voiceconv.testing import (
            GPTLiveStandIn,
            InProcessServerError,
            RealtimeStandIn,
            ScriptedResponse,
            TwilioWebhookError,
        )
        from voiceconv.testing.conversation import Conversation, write_wav

        token = security.auth_token()
        standin: RealtimeStandIn | GPTLiveStandIn | None = None
        # Closed last to first: the server (finalising its calls, writing their records),
        # then the stand-in, then the settings and environment the call ran with.
        async with contextlib.AsyncExitStack() as stack:
            if options["standin"] and options.get("gpt_live"):
                standin = await stack.enter_async_context(GPTLiveStandIn(api_key="sk-standin"))
            elif options["standin"]:
                standin = await stack.enter_async_context(
                    RealtimeStandIn(api_key="sk-standin", speed_factor=1.0)
                )
            if options["server"]:
                url = where = options["server"]
            else:
                try:
                    url, token = await self.serve_in_process(stack, standin, token, options)
                except InProcessServerError as exc:
                    raise CommandError(f"could not start the in-process server: {exc}") from None
                where = f"{url}, served in this process"
            self.stdout.write(f"calling {where} ({'stand-in' if standin else 'OpenAI'})")
            self.conversation = conversation = Conversation(
                url, auth_token=token or None, public_url=voiceconv_settings.PUBLIC_URL or None,
                standin=standin, number=number,
                greeting=ScriptedResponse() if voiceconv_settings.GREETING else None,
                answer_timeout=options["timeout"], on_event=self.event,
            )
            for text in options["say"]:
                conversation.say(text)
            for path, audio in wavs:
                conversation.play(audio, label=path)
            if options["dtmf"]:
                conversation.press(options["dtmf"])
            try:
                result = await conversation.run()
            except TwilioWebhookError as exc:
                raise CommandError(f"the webhook refused the call: {exc}") from None
        self.report(result)
        if options["record"]:
            write_wav(options["record"], result.reply_audio)
            self.stdout.write(f"saved {len(result.reply_audio) / 8000:.1f} s of the agent's "
                              f"audio to {options['record']}")

    async def serve_in_process(
        self, stack: contextlib.AsyncExitStack, standin: Any, token: str,
        options: dict[str, Any],
    ) -> tuple[str, str]:
        """Serve the project's ASGI application on a loopback port of this very process
        (stopped, its calls finalised, when ``stack`` closes); returns its URL and the auth
        token to sign with."""
        # Imported here: voiceconv.testing needs the test dependencies (pytest-asyncio), so the
        # command's module (and its --help) loads without them.
        from voiceconv.testing import InProcessServer

        name = str(getattr(settings, "ASGI_APPLICATION", "") or "")
        if not name:
            raise CommandError("ASGI_APPLICATION is not set: the call needs the project's "
                               "ASGI application (or a running server: --server URL)")
        try:
            application = import_string(name)
        except ImportError as exc:
            raise CommandError(f"ASGI_APPLICATION {name!r} cannot be imported: {exc}") from None
        overrides: dict[str, Any] = {}
        if not token:
            # Webhooks and streams are signed as Twilio would sign them: with a token of the
            # call's own when the project has none.
            token = overrides["TWILIO_AUTH_TOKEN"] = secrets.token_hex(16)
        # The webhook is posted to 127.0.0.1 (Django allows it by default only under DEBUG).
        hosts = settings.ALLOWED_HOSTS or (["127.0.0.1"] if settings.DEBUG else [])
        if not validate_host("127.0.0.1", hosts):
            overrides["ALLOWED_HOSTS"] = [*settings.ALLOWED_HOSTS, "127.0.0.1"]
        if overrides:
            stack.enter_context(override_settings(**overrides))
        if standin is not None:
            # Read by the SDK when the first call makes its client (one per key and URL).
            stack.enter_context(_environ(OPENAI_BASE_URL=standin.base_url,
                                         OPENAI_API_KEY="sk-standin"))
        if options["verbosity"] < 2:
            stack.enter_context(_quiet("voiceconv", logging.WARNING))
        server = await InProcessServer(application).start()
        stack.push_async_callback(server.stop)
        return server.http_url, token

    def event(self, kind: str, **data: Any) -> None:
        if kind == "started":
            self.stdout.write(f"call {data['call_sid']} connected")
        elif kind == "say":
            self.stdout.write(f"  > {data['line']}")
        elif kind == "answered":
            latency = data["latency_ms"]
            took = f"{latency:.0f} ms" if latency is not None else "no answer"
            self.stdout.write(f"    answered after {took} ({data['answer_ms'] / 1000:.1f} s)")
        sys.stdout.flush()

    def report(self, result: Any) -> None:
        first = result.time_to_first_audio_ms
        self.stdout.write(f"time to first audio: {first:.0f} ms" if first is not None
                          else "time to first audio: no audio")
        self.stdout.write("transcript:")
        if not result.transcript:
            self.stdout.write("  (none in this project's database)")
        for entry in result.transcript:
            at = entry["offset_ms"]
            stamp = f"{at / 1000:6.1f}s" if at is not None else "      "
            latency = f"  [{entry['latency_ms']} ms]" if entry.get("latency_ms") else ""
            self.stdout.write(f"  {stamp} {entry['role']:>9}: {entry['text']}{latency}")
        for call in result.tool_calls:
            self.stdout.write(f"  tool {call['tool_name']}({call['arguments']}) → "
                              f"{call['error'] or call['output']}")
        self.stdout.write(f"ended: {result.end_reason or 'unknown'}")


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables for a while."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _quiet(name: str, level: int) -> Iterator[None]:
    """Raise a logger's threshold for a while (the server's log, at -v 1)."""
    logger = logging.getLogger(name)
    saved = logger.level
    if logger.getEffectiveLevel() < level:
        logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(saved)
