"""What the server under test wrote for each call: run in the project, prints JSON.

    DATABASE_URL=... python -m bench.records CA... CA...

For every CallSid: whether a ``Call`` row exists and has ended, its status and end reason,
its transcript entries by role, and whether their sequence runs 1..n without a gap.
"""

from __future__ import annotations

import json
import os
import sys


def main(call_sids: list[str]) -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from voiceconv.models import Call

    report: dict[str, dict[str, object]] = {}
    calls = {c.twilio_call_sid: c for c in Call.objects.filter(twilio_call_sid__in=call_sids)}
    for sid in call_sids:
        call = calls.get(sid)
        if call is None:
            report[sid] = {"exists": False}
            continue
        entries = list(call.transcript_entries.order_by("sequence").values("sequence", "role"))
        roles: dict[str, int] = {}
        for e in entries:
            roles[e["role"]] = roles.get(e["role"], 0) + 1
        report[sid] = {
            "exists": True,
            "ended": call.ended_at is not None,
            "status": call.status,
            "end_reason": call.end_reason,
            "roles": roles,
            "contiguous": [e["sequence"] for e in entries] == list(range(1, len(entries) + 1)),
            "responses": call.responses,
        }
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
