"""The benchmark, quick: three calls for a few seconds under daphne, checked for correctness.

Real processes on loopback (the server, the Realtime stand-in, the load generator), each call
entered through the signed webhook with real-time caller audio, replies and barge-ins. Only
correctness is asserted (no frame lost, duplicated or reordered in either direction, a
``clear`` for barge-in in every call, every call's webhook answered), never timing.
"""

from __future__ import annotations

import pytest

from bench.common import percentiles, read_tag, tag_frame
from bench.run import LevelConfig, run_level
from tests.conftest import database_url

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def test_frame_tags_round_trip_and_stay_silent() -> None:
    import base64

    from voiceconv.testing.audio import rms, silence

    frame = tag_frame(silence(20), 65534, 0xABCDEF)
    assert len(frame) == 160
    assert read_tag(base64.b64encode(frame).decode()) == (65534, 0xABCDEF)
    assert rms(frame) < 0.002  # far below the stand-in's VAD threshold (0.02)
    assert read_tag(base64.b64encode(silence(20)).decode()) is None
    assert percentiles([3.0, 1.0, 2.0])["p50"] == 2.0


def test_quick_benchmark_loses_nothing_and_barges_in() -> None:
    cfg = LevelConfig(
        server="daphne", n=3, duration=3.0, settle=1.0, drain=1.0,
        database_url=database_url(),
    )
    result = run_level(cfg)
    assert result.errors == []
    assert result.calls_ok == 3
    assert result.webhooks_answered == 3  # every call's webhook was answered with its TwiML
    # caller → OpenAI: every frame arrived once, in order
    assert result.frames_up > 3 * 150  # >= 3 s of 20 ms frames per call
    assert (result.lost_up, result.duplicated_up, result.reordered_up) == (0, 0, 0)
    # OpenAI → caller: every audio delta not muted by a barge-in arrived, in order
    assert result.deltas_down > 0
    assert (result.lost_down, result.reordered_down, result.unknown_down) == (0, 0, 0)
    # barge-in: every call was interrupted at least once, and Twilio was told to clear
    assert result.min_clears_per_call >= 1
    assert result.speech_starts >= 3
    assert result.up["n"] > 0 and result.down["n"] > 0 and result.barge_in["n"] > 0
    # every call left a final record and a whole transcript, caller and assistant
    assert result.record_problems == []
    assert result.records_ok == 3
    assert result.conversations_ok == 3


def test_quick_benchmark_with_pre_connect_adopts_one_session_a_call() -> None:
    cfg = LevelConfig(
        server="daphne", n=3, duration=2.0, settle=1.0, drain=1.0,
        database_url=database_url(), preconnect=True,
    )
    result = run_level(cfg)
    assert result.preconnect
    assert result.errors == []
    assert result.calls_ok == 3 and result.ttfa["n"] == 3
    assert (result.lost_up, result.lost_down) == (0, 0)
    # Each call's stream adopted the session its webhook opened: one session a call (and the
    # warm-up call's), none left without audio.
    assert result.sessions_opened == result.realtime_sessions + 1 == 4
    assert result.records_ok == 3
