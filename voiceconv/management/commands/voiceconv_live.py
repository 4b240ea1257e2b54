"""``manage.py voiceconv_live``: the calls live right now, across every server process."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from voiceconv.live import live_calls, sweep_lost_calls


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(max(seconds, 0)), 60)
    return f"{minutes}:{secs:02d}"


class Command(BaseCommand):
    help = (
        "List the calls live right now on any server process (from the Call rows and their "
        "heartbeats): CallSid, agent, numbers, duration, process."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="One JSON object per line.")
        parser.add_argument(
            "--sweep", action="store_true",
            help="First mark ended the calls whose process stopped sending heartbeats.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["sweep"]:
            lost = sweep_lost_calls()
            if lost:
                self.stderr.write(f"{lost} call(s) whose process is gone marked ended.")
        now = timezone.now()
        calls = list(live_calls(now))
        rows = [
            {
                "call_sid": call.twilio_call_sid,
                "agent": str(call.agent) if call.agent_id else "",
                "from": call.from_number,
                "to": call.to_number,
                "duration_seconds": round((now - call.stream_started_at).total_seconds(), 1),
                "process": call.live_process,
            }
            for call in calls
        ]
        if options["json"]:
            for row in rows:
                self.stdout.write(json.dumps(row))
            return
        if not rows:
            self.stdout.write("No live calls.")
            return
        header = ("CALL SID", "AGENT", "FROM", "TO", "DURATION", "PROCESS")
        table = [header] + [
            (r["call_sid"], r["agent"] or "-", r["from"] or "-", r["to"] or "-",
             _duration(r["duration_seconds"]), r["process"] or "-")
            for r in rows
        ]
        widths = [max(len(str(line[i])) for line in table) for i in range(len(header))]
        for line in table:
            cells = (str(v).ljust(w) for v, w in zip(line, widths, strict=True))
            self.stdout.write("  ".join(cells).rstrip())
        self.stdout.write(f"{len(rows)} live call(s).")
