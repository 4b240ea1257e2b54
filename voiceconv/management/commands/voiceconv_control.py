"""``manage.py voiceconv_control CALLSID ACTION …``: steer a live call from the command line."""

from __future__ import annotations

import getpass
import json
from typing import Any

from asgiref.sync import async_to_sync
from django.core.management.base import BaseCommand, CommandError, CommandParser

from voiceconv import control


class Command(BaseCommand):
    help = (
        "Control a live call on whichever process holds it: hangup, say, whisper, transfer, "
        "warm-transfer, dtmf, update. Exits non-zero when the call is unknown, not live, or "
        "did not take it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("call_sid", metavar="CALLSID")
        common = CommandParser(add_help=False)
        common.add_argument("--by", help="Who asks (recorded on the call); default: your login.")
        common.add_argument("--timeout", type=float, help="Seconds to wait for the call.")
        actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        actions.required = True
        hangup = actions.add_parser("hangup", parents=[common], help="End the call.")
        hangup.add_argument("--reason", default="operator")
        hangup.add_argument("--now", action="store_true",
                            help="At once, not after what the agent is saying.")
        say = actions.add_parser(
            "say", parents=[common], help="The agent says TEXT (or follows --instructions)."
        )
        say.add_argument("text", nargs="?")
        say.add_argument("--instructions")
        whisper = actions.add_parser(
            "whisper", parents=[common], help="An instruction the model follows from now on."
        )
        whisper.add_argument("instructions")
        transfer = actions.add_parser(
            "transfer", parents=[common], help="Hand the caller to a number or SIP URI."
        )
        transfer.add_argument("target")
        warm = actions.add_parser(
            "warm-transfer", parents=[common],
            help="Brief a person (--brief) on a call of their own, then bridge the caller.",
        )
        warm.add_argument("target")
        warm.add_argument("--brief", default="")
        dtmf = actions.add_parser(
            "dtmf", parents=[common], help="Play DTMF tones (0-9 * # A-D, w = pause)."
        )
        dtmf.add_argument("digits")
        update = actions.add_parser(
            "update", parents=[common], help="Change instructions, tools or turn detection."
        )
        update.add_argument("--instructions")
        update.add_argument("--tools", help="Comma-separated tool names ('' for none).")
        update.add_argument("--turn-detection", help='JSON, e.g. \'{"type": "semantic_vad"}\'.')

    def handle(self, *args: Any, **options: Any) -> None:
        call_sid = options["call_sid"]
        action = options["action"]
        by = options.get("by") or f"{getpass.getuser()} (voiceconv_control)"
        request: dict[str, Any]
        if action == "hangup":
            name, request = "hang_up", {"reason": options["reason"], "immediately": options["now"]}
        elif action == "say":
            name = "say"
            request = ({"text": options["text"]} if options["text"]
                       else {"instructions": options["instructions"]})
        elif action == "whisper":
            name, request = "whisper", {"instructions": options["instructions"]}
        elif action == "transfer":
            name, request = "transfer", {"target": options["target"]}
        elif action == "warm-transfer":
            name, request = "warm_transfer", {"target": options["target"],
                                              "brief": options["brief"]}
        elif action == "dtmf":
            name, request = "send_dtmf", {"digits": options["digits"]}
        else:
            name, request = "update", {}
            if options["instructions"] is not None:
                request["instructions"] = options["instructions"]
            if options["tools"] is not None:
                request["tools"] = [t.strip() for t in options["tools"].split(",") if t.strip()]
            if options["turn_detection"] is not None:
                try:
                    request["turn_detection"] = json.loads(options["turn_detection"])
                except ValueError as exc:
                    raise CommandError(f"--turn-detection is not JSON: {exc}") from exc
        try:
            result = async_to_sync(control.arequest)(
                call_sid, name, request, by=by, timeout=options.get("timeout")
            )
        except (control.ControlError, ValueError) as exc:
            raise CommandError(str(exc)) from exc
        if not result:
            raise CommandError(f"{name} not taken by call {call_sid}: {result.detail}")
        extra = f" ({result.detail})" if result.detail else ""
        self.stdout.write(f"{name} taken by call {call_sid} on {result.process}{extra}.")
