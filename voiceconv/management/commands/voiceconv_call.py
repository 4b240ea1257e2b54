"""``manage.py voiceconv_call``: talk to an agent from the command line, no phone needed.

Places a simulated call the way Twilio does (signed incoming-call webhook, then the media
stream) through a running server (``--server URL``) or a server of this project started for
the call, says each ``--say`` line (espeak-ng) and ``--wav`` file, presses ``--dtmf`` keys,
waits for every answer, prints the transcript with timings and saves what the agent said
(``--record reply.wav``). The model is the real one (``OPENAI_API_KEY``) or, with
``--standin``, the stand-in of the agent's speech backend (Realtime or GPT-Live).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import sys
import urllib.error
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from voiceconv.conf import voiceconv_settings


class Command(BaseCommand):
    help = "Call an agent through the webhook and stream, as Twilio would, and print the talk."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--agent", help="slug of the agent to call (default: the default)")
        parser.add_argument("--say", action="append", default=[], metavar="TEXT",
                            help="a line to say (espeak-ng); repeatable")
        parser.add_argument("--wav", action="append", default=[], metavar="FILE",
                            help="a WAV file to say; repeatable (after the --say lines)")
        parser.add_argument("--dtmf", default="", metavar="DIGITS", help="keys to press last")
        parser.add_argument("--record", metavar="FILE", help="save what the agent said (WAV)")
        parser.add_argument("--server", metavar="URL",
                            help="a running server (http://127.0.0.1:8000); default: start one")
        parser.add_argument("--standin", action="store_true",
                            help="talk to the stand-in of the agent's backend (Realtime or "
                                 "GPT-Live) instead of OpenAI")
        parser.add_argument("--timeout", type=float, default=30.0,
                            help="longest wait for an answer (s)")

    def handle(self, *args: Any, **options: Any) -> None:
        # Imported here: voiceconv.testing needs the test dependencies (pytest-asyncio), so the
        # command's module (and its --help) loads without them.
        from voiceconv.testing.conversation import WavError, read_wav

        if options["server"] and options["standin"]:
            raise CommandError(
                "--standin needs the server this command starts; for your own server, start "
                "python -m voiceconv.testing.realtime_server (or .live_server for GPT-Live "
                "agents) and point its OPENAI_BASE_URL at it"
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
            raise CommandError(f"server unreachable: {exc}") from None

    def agent_number(self, slug: str | None) -> str:
        """The number to dial for the agent (the default agent answers any other number)."""
        # Imported here, not at the top: the models need Django's app registry, and this module is
        # importable before it is ready.
        from voiceconv.models import Agent

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
        # Imported here, not at the top: the models need Django's app registry.
        from voiceconv.models import Agent

        agent = (Agent.objects.filter(slug=slug) if slug
                 else Agent.objects.filter(is_default=True, enabled=True)).first()
        return str(agent.backend) if agent is not None else "realtime"

    async def call(self, options: dict[str, Any], wavs: list[tuple[str, bytes]],
                   number: str) -> None:
        # Imported here: voiceconv.testing needs the test dependencies (pytest-asyncio), so the
        # command's module (and its --help) loads without them.
        from voiceconv.testing import (
            GPTLiveStandIn,
            RealtimeStandIn,
            ScriptedResponse,
            ServerProcess,
        )
        from voiceconv.testing.conversation import Conversation, write_wav

        token = str(getattr(settings, "TWILIO_AUTH_TOKEN", "") or "")
        public_url = voiceconv_settings.PUBLIC_URL or None
        standin: RealtimeStandIn | GPTLiveStandIn | None = None
        server = None
        try:
            if options["standin"] and options.get("gpt_live"):
                standin = await GPTLiveStandIn(api_key="sk-standin").start()
            elif options["standin"]:
                standin = await RealtimeStandIn(api_key="sk-standin", speed_factor=1.0).start()
            if options["server"]:
                url = options["server"]
            else:
                env = {"TWILIO_AUTH_TOKEN": token or secrets.token_hex(16)}
                token = env["TWILIO_AUTH_TOKEN"]
                if standin is not None:
                    env.update(OPENAI_BASE_URL=standin.base_url, OPENAI_API_KEY="sk-standin")
                application = str(settings.ASGI_APPLICATION).rsplit(".", 1)
                server = ServerProcess(":".join(application), env=env)
                try:
                    await asyncio.to_thread(server.start)
                except RuntimeError as exc:
                    server = None
                    raise CommandError(f"could not start a server for the call: {exc}") from None
                url = server.http_url
            self.stdout.write(f"calling {url} ({'stand-in' if standin else 'OpenAI'})")
            conversation = Conversation(
                url, auth_token=token or None, public_url=public_url, standin=standin,
                number=number, greeting=ScriptedResponse() if voiceconv_settings.GREETING else None,
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
            except Exception as exc:
                # Imported here: voiceconv.testing needs the test dependencies (pytest-asyncio),
                # so the command's module (and its --help) loads without them.
                from voiceconv.testing import TwilioWebhookError

                if isinstance(exc, TwilioWebhookError):
                    raise CommandError(f"the webhook refused the call: {exc}") from None
                raise
        finally:
            if server is not None:
                await asyncio.to_thread(server.stop)
            if standin is not None:
                await standin.stop()
        self.report(result)
        if options["record"]:
            write_wav(options["record"], result.reply_audio)
            self.stdout.write(f"saved {len(result.reply_audio) / 8000:.1f} s of the agent's "
                              f"audio to {options['record']}")

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
