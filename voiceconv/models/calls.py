from django.db import models  # noqa: F401

# Placeholder: Agent, Call, TranscriptEntry are being written.
Agent = Call = TranscriptEntry = None
