"""``python -m voiceconv.testing.live_server``: serve the GPT-Live stand-in until SIGTERM."""

import sys

from voiceconv.testing.live_server.cli import main

sys.exit(main())
