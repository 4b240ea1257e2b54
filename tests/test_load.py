"""The load test: 100 concurrent calls on one server process, nothing lost.

The benchmark's machinery (bench.run) with its timing left out: real processes on loopback,
100 calls entered through the signed webhook with real-time caller audio, replies and
barge-ins, then a graceful stop of the server. Asserted: every caller frame reached OpenAI
once and in order, every reply chunk reached its caller in order, and every call left a final
record with a whole transcript. Latency and CPU are benchmark figures (docs/benchmarks.md),
never asserted here.

Nothing here depends on how fast the machine is: every call streams 5 s of audio after its own
stream started, however late a saturated machine let it in, and the server is given a minute
to open each Realtime session (with the caller's audio buffered meanwhile), so every call opens
its session and every frame is accounted for.
"""

from __future__ import annotations

import pytest

from bench.run import LevelConfig, run_level
from tests.conftest import database_url

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.mark.timeout(900)
def test_a_hundred_concurrent_calls_lose_no_frame_and_no_record() -> None:
    cfg = LevelConfig(
        server="uvicorn", n=100, duration=4.0, settle=1.0, drain=1.5, warmup=False,
        database_url=database_url(), min_audio_s=5.0, ramp_s=5.0,
        server_env={"VOICECONV_CONNECT_TIMEOUT": "60", "VOICECONV_EARLY_AUDIO_BUFFER_MS": "60000"},
    )
    result = run_level(cfg)
    assert result.errors == []
    assert result.calls_ok == 100
    assert result.webhooks_answered == 100
    assert result.realtime_sessions == 100
    assert (result.lost_up, result.duplicated_up, result.reordered_up) == (0, 0, 0)
    assert result.frames_up > 100 * 200  # at least 4 s of 20 ms frames per call
    assert (result.lost_down, result.reordered_down, result.unknown_down) == (0, 0, 0)
    assert result.deltas_down > 0
    assert result.record_problems == []
    assert result.records_ok == 100
    # (whether each transcript also has both parties depends on timing at saturation: reported
    # by the benchmark, not asserted)
