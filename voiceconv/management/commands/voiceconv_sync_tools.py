"""``manage.py voiceconv_sync_tools``: create and refresh tool definitions from code."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from voiceconv.tools.binding import sync_tool_definitions


class Command(BaseCommand):
    help = (
        "Create a ToolDefinition for every @tool function, refresh generated schemas and "
        "descriptions, and list definitions whose function no longer exists."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--database", default="default", help="Database alias to sync (default: default)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = sync_tool_definitions(using=options["database"])
        quiet = options["verbosity"] < 1
        if not quiet:
            self.stdout.write(str(report))
        if report.orphans:
            # A problem to act on: said on stderr even with -v 0.
            self.stderr.write(
                self.style.WARNING(
                    "Not registered in code, never offered to the model: "
                    + ", ".join(report.orphans)
                    + ". Delete them in the admin or restore the functions."
                )
            )
        elif not quiet:
            self.stdout.write(self.style.SUCCESS("Tool definitions are in sync."))
