"""A Twilio Media Streams client that drives the app the way Twilio does.

- :mod:`~voiceconv.testing.twilio_client.client`: :class:`TwilioStreamClient`, the connection,
  what it sends and how a test waits on it;
- :mod:`~voiceconv.testing.twilio_client.playback`: Twilio's playback buffer (marks, ``clear``);
- :mod:`~voiceconv.testing.twilio_client.webhook`: the signed incoming-call webhook and its TwiML;
- :mod:`~voiceconv.testing.twilio_client.records`: Twilio's numbers, sids and the records kept.
"""

from voiceconv.testing.twilio_client.client import TwilioStreamClient
from voiceconv.testing.twilio_client.records import (
    FRAME_MS as FRAME_MS,
)
from voiceconv.testing.twilio_client.records import (
    MAX_BUFFER_BYTES as MAX_BUFFER_BYTES,
)
from voiceconv.testing.twilio_client.records import (
    TWILIO_USER_AGENT as TWILIO_USER_AGENT,
)
from voiceconv.testing.twilio_client.records import (
    ClearRecord,
    MarkRecord,
    MediaRecord,
    TwilioWebhookError,
    Violation,
    new_sid,
)

# FRAME_MS, MAX_BUFFER_BYTES and TWILIO_USER_AGENT are importable from here as before, but
# are not part of the kit's public names.
__all__ = [
    "ClearRecord",
    "MarkRecord",
    "MediaRecord",
    "TwilioStreamClient",
    "TwilioWebhookError",
    "Violation",
    "new_sid",
]
