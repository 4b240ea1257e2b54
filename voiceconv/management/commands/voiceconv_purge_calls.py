"""``manage.py voiceconv_purge_calls``: delete calls older than N days (retention)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction
from django.utils import timezone

from voiceconv.models import Call, ToolInvocation, TranscriptEntry


class Command(BaseCommand):
    help = (
        "Delete calls created more than --older-than-days days ago, with their transcript "
        "entries and tool invocations."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than-days", type=int, required=True, metavar="N")
        parser.add_argument(
            "--dry-run", action="store_true", help="Only report what would be deleted."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        days = options["older_than_days"]
        if days < 0:
            self.stderr.write("--older-than-days must be 0 or more; nothing deleted.")
            return
        cutoff = timezone.now() - dt.timedelta(days=days)
        calls = Call.objects.filter(created_at__lt=cutoff)
        n_calls = calls.count()
        n_entries = TranscriptEntry.objects.filter(call__in=calls.values("pk")).count()
        n_tools = ToolInvocation.objects.filter(call__in=calls.values("pk")).count()
        summary = (
            f"{n_calls} call(s) created before {cutoff.isoformat(timespec='seconds')}, "
            f"{n_entries} transcript entr{'y' if n_entries == 1 else 'ies'}, "
            f"{n_tools} tool invocation(s)"
        )
        if options["dry_run"]:
            self.stdout.write(f"Would delete {summary}.")
            return
        with transaction.atomic():
            ToolInvocation.objects.filter(call__in=calls.values("pk")).delete()
            calls.delete()
        if options["verbosity"] >= 1:
            self.stdout.write(f"Deleted {summary}.")
