"""``manage.py voiceconv_dial +14155550123 --agent sales``: place an outbound call."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from voiceconv.calls import OutboundCallError, place_call


class Command(BaseCommand):
    help = (
        "Call a number and connect the callee to an agent (through Twilio's REST API). "
        "Prints the CallSid."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("to", help="The number to call, in E.164 format (+14155550123).")
        parser.add_argument("--agent", help="Agent slug or id (default: the default agent).")
        parser.add_argument("--from", dest="from_", help="Caller ID (E.164).")
        parser.add_argument(
            "--param", action="append", default=[], metavar="NAME=VALUE",
            help="A custom parameter for the stream and the tools' state (repeatable).",
        )
        parser.add_argument(
            "--machine-detection", choices=("auto", "Enable", "DetectMessageEnd", "off"),
            default="auto",
            help="Answering-machine detection (auto: as the agent's policy needs).",
        )
        parser.add_argument("--no-status-callback", action="store_true",
                            help="Do not ask Twilio for call progress callbacks.")
        parser.add_argument("--json", action="store_true", help="Print the call as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        params: dict[str, str] = {}
        for item in options["param"]:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise CommandError(f"--param {item!r}: expected NAME=VALUE")
            params[name] = value
        detection = options["machine_detection"]
        machine_detection: str | bool | None = (
            None if detection == "auto" else False if detection == "off" else detection
        )
        try:
            call = place_call(
                options["to"],
                agent=options["agent"],
                from_=options["from_"],
                custom_parameters=params,
                machine_detection=machine_detection,
                status_callback=not options["no_status_callback"],
            )
        except OutboundCallError as exc:
            raise CommandError(str(exc)) from None
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        if options["json"]:
            self.stdout.write(json.dumps({
                "call_sid": call.twilio_call_sid, "id": call.pk, "to": call.to_number,
                "from": call.from_number, "agent": call.agent_id, "status": call.status,
            }))
        else:
            self.stdout.write(
                f"{call.twilio_call_sid}: calling {call.to_number} from {call.from_number}"
            )
