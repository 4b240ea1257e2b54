#!/usr/bin/env bash
# Regenerates the bundled μ-law clips in voiceconv/data/ with espeak-ng and sox (Debian packages).
# Output: raw G.711 μ-law, 8 kHz, mono, no header: what Twilio Media Streams plays.
set -euo pipefail
cd "$(dirname "$0")/../voiceconv/data"
say() {  # say FILE TEXT
  espeak-ng -v en-us -s 160 -w /tmp/voiceconv-clip.wav "$2"
  sox /tmp/voiceconv-clip.wav -r 8000 -c 1 -t raw -e mu-law -b 8 "$1"
  rm -f /tmp/voiceconv-clip.wav
}
say apology.ulaw "Sorry, we are having technical difficulties. Please call again later. Goodbye."
