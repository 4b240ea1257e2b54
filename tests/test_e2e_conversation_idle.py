"""Rule 1 end to end: a caller who is talking is never idle, even for 15 s and more."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from tests.conftest import ROOT, server_env
from tests.e2e import enter_call, eventually
from voiceconv.testing import RealtimeStandIn, ScriptedResponse, ServerProcess, silence, speech_like

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
]

REPROMPT_S = 3
HANGUP_S = 6


@pytest.fixture(scope="module")
def idle_server(
    django_db_setup: None, django_db_blocker: pytest.FixtureRequest, standin_port: int
) -> Iterator[ServerProcess]:
    """The example project with a short idle reprompt (3 s) and idle hang-up (6 s)."""
    with django_db_blocker.unblock():  # type: ignore[attr-defined]
        env = server_env(standin_port)
    env["VOICECONV_IDLE_REPROMPT_SECONDS"] = str(REPROMPT_S)
    env["VOICECONV_IDLE_HANGUP_SECONDS"] = str(HANGUP_S)
    with ServerProcess(env=env, cwd=ROOT) as server:
        yield server


async def test_a_caller_talking_for_16_seconds_is_never_idle(
    idle_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    standin.responses.append(ScriptedResponse(text="Hello, how can I help?"))
    standin.responses.append(ScriptedResponse(text="Thanks, I have noted your address."))
    client = await enter_call(idle_server, realtime=True)
    session = await standin.wait_for_session(0, timeout=10)
    await session.expect_event("response.create", timeout=10)
    await eventually(lambda: "response.done" in session.sent_types(), timeout=10)
    await client.send_silence(1600)  # the greeting plays to the end
    # A long address read out in one breath: 16 s of speech, more than twice the hang-up time.
    try:
        await client.send_audio(speech_like(16_000, seed=5))
    except ConnectionClosed:
        pytest.fail(
            "the app ended the call while the caller was speaking "
            f"(after {client.call_time_ms:.0f} ms of call time)"
        )
    assert session.sent_types().count("input_audio_buffer.speech_started") == 1
    assert "input_audio_buffer.speech_stopped" not in session.sent_types()
    assert not client.closed.is_set(), "the caller was hung up on while speaking"
    assert len(session.response_requests) == 1, session.response_requests  # no reprompt
    await client.send_audio(silence(800))
    await eventually(lambda: session.sent_types().count("response.done") >= 2, timeout=10)
    await client.send_silence(500)
    assert not client.closed.is_set()
    assert len(session.response_requests) == 1, session.response_requests
    await client.hang_up()
