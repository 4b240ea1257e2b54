"""``python -m voiceconv.testing.realtime_server``: serve the stand-in until SIGTERM."""

import sys

from voiceconv.testing.realtime_server.cli import main

sys.exit(main())
