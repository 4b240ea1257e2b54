"""The metrics endpoint of a real server, end to end: a call with a barge-in moves the
barge-in reaction histogram by one and the caller-audio latency histogram by the frames it
sampled (one in ``LATENCY_SAMPLE_FRAMES``, not every frame); the endpoint refuses a scrape
without its bearer token. In one process, and in ``prometheus_client``'s multiprocess mode."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, server_env
from tests.e2e import enter_call, wait_for_call
from voiceconv.testing import RealtimeStandIn, ScriptedResponse, speech_like
from voiceconv.testing.server import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
]

TOKEN = "e2e-scrape-token-0123456789"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(server: ServerProcess, authorization: str | None = f"Bearer {TOKEN}") -> Samples:
    headers = {"Authorization": authorization} if authorization else {}
    request = urllib.request.Request(server.http_url + "/twilio/metrics/", headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def status_of(server: ServerProcess, authorization: str | None) -> int:
    try:
        scrape(server, authorization)
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code
    return 200


async def scrape_until(server: ServerProcess, ready: Callable[[Samples], bool]) -> Samples:
    """Scrape until ``ready`` (a call's timings are observed when its end is recorded)."""
    for _ in range(100):
        values = await asyncio.to_thread(scrape, server)
        if ready(values):
            return values
        await asyncio.sleep(0.1)
    return values


@pytest.mark.parametrize("multiprocess", [False, True], ids=["one-process", "multiprocess"])
async def test_a_barge_in_call_moves_the_latency_histograms(
    django_db_blocker: object, standin_port: int, standin: RealtimeStandIn, tmp_path: Path,
    multiprocess: bool,
) -> None:
    env = server_env(standin_port, METRICS_TOKEN=TOKEN)
    if multiprocess:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    with ServerProcess(env=env, cwd=ROOT) as server:
        assert await asyncio.to_thread(status_of, server, None) == 403
        assert await asyncio.to_thread(status_of, server, "Bearer wrong-token") == 403
        before = await asyncio.to_thread(scrape, server)

        standin.responses.append(ScriptedResponse(text="x" * 100, audio_ms=6000))
        client = await enter_call(server, realtime=True)
        session = await standin.wait_for_session(0, timeout=15)
        await session.expect_event("response.create", timeout=10)
        await client.send_silence(1500)  # part of the 6 s answer is heard, in real time
        await client.send_audio(speech_like(400))  # the caller barges in
        await client.expect_event("clear", timeout=5)
        await session.expect_event("conversation.item.truncate", timeout=5)
        await client.hang_up()
        await wait_for_call(client.call_sid, ended=True, timeout=10)

        def grew(values: Samples, name: str, **labels: str) -> float:
            key = (name, tuple(sorted(labels.items())))
            return values.get(key, 0.0) - before.get(key, 0.0)

        barge = "voiceconv_barge_in_reaction_seconds"
        added = "voiceconv_caller_audio_added_latency_seconds"
        after = await scrape_until(server, lambda v: grew(
            v, "voiceconv_calls_ended_total", reason="caller_hung_up") >= 1)
        if multiprocess:
            assert list(tmp_path.glob("histogram_*.db")), "no multiprocess files written"

    # One barge-in, one observation: in the count, the sum and the buckets.
    assert grew(after, f"{barge}_count") == 1
    assert grew(after, f"{barge}_bucket", le="+Inf") == 1
    assert grew(after, f"{barge}_sum") > 0
    # Caller frames were sampled, not every one of them timed.
    frames_in = grew(after, "voiceconv_frames_total", direction="in")
    sampled = grew(after, f"{added}_count")
    assert frames_in > 50
    assert 1 <= sampled < frames_in
    assert grew(after, f"{added}_bucket", le="+Inf") == sampled
    assert grew(after, f"{added}_sum") > 0
    buckets = sorted(
        (float(dict(labels)["le"]), value - before.get((name, labels), 0.0))
        for (name, labels), value in after.items() if name == f"{added}_bucket")
    assert [n for _, n in buckets] == sorted(n for _, n in buckets)  # cumulative
