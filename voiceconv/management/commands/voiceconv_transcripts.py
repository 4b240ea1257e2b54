"""``manage.py voiceconv_transcripts``: export transcripts to stdout (JSON lines or text)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from voiceconv.models import Call, TranscriptEntry
from voiceconv.transcripts import as_text, iter_entries_jsonl, parse_since


class Command(BaseCommand):
    help = (
        "Write call transcripts to stdout: one JSON object per entry (--format jsonl) or "
        "readable text per call (--format text)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--format", choices=("jsonl", "text"), default="jsonl")
        parser.add_argument(
            "--since",
            help="Only calls started after this: a duration back from now (7d, 12h, 30m, 2w) "
            "or an ISO date/datetime (2026-01-31, 2026-01-31T08:00:00+00:00).",
        )
        parser.add_argument(
            "--call", action="append", dest="calls", metavar="SID",
            help="Only this CallSid (repeatable).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        calls = Call.objects.all()
        if options["since"]:
            try:
                since = parse_since(options["since"])
            except ValueError as exc:
                raise CommandError(f"--since: {exc}") from exc
            calls = calls.filter(created_at__gte=since)
        if options["calls"]:
            calls = calls.filter(twilio_call_sid__in=options["calls"])
            missing = set(options["calls"]) - set(calls.values_list("twilio_call_sid", flat=True))
            for sid in sorted(missing):
                self.stderr.write(f"No call {sid}.")
        if options["format"] == "jsonl":
            entries = TranscriptEntry.objects.filter(call__in=calls.values("pk"))
            for line in iter_entries_jsonl(entries):
                self.stdout.write(line, ending="")
        else:
            for index, call in enumerate(
                calls.select_related("agent").order_by("created_at", "pk").iterator(chunk_size=100)
            ):
                if index:
                    self.stdout.write("")
                self.stdout.write(as_text(call), ending="")
