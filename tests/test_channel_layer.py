"""The Redis channel layer stays quiet: configured right, idle calls log no failure and still
take control messages; configured wrong, it is a check and one clear line, not a log storm."""

from __future__ import annotations

import asyncio
import os

import pytest
from channels_redis.core import RedisChannelLayer

from tests.e2e import enter_call, play_until_closed, wait_for_call
from voiceconv.layers import redis_timeout_problem
from voiceconv.testing import RealtimeStandIn, ServerProcess

REDIS_URL = os.environ.get("REDIS_URL", "")


def test_a_socket_timeout_not_longer_than_the_blocking_receive_is_a_mistake() -> None:
    url = "redis://127.0.0.1:6379/0"
    assert "socket_timeout (5 s)" in (redis_timeout_problem(RedisChannelLayer(hosts=[url])) or "")
    shorter = RedisChannelLayer(hosts=[{"address": url, "socket_timeout": 3}])
    assert redis_timeout_problem(shorter) is not None
    right = RedisChannelLayer(hosts=[{"address": url, "socket_timeout": 10}])
    assert redis_timeout_problem(right) is None
    assert redis_timeout_problem(RedisChannelLayer(hosts=[url + "?socket_timeout=10"])) is None
    assert redis_timeout_problem(object()) is None  # not a Redis layer


def test_the_example_projects_layer_is_configured_right() -> None:
    from django.test import override_settings

    from voiceconv.checks_setup import check_channel_layer

    layer = {"BACKEND": "channels_redis.core.RedisChannelLayer",
             "CONFIG": {"hosts": ["redis://127.0.0.1:6379/0"]}}
    with override_settings(CHANNEL_LAYERS={"default": layer}):
        from channels.layers import channel_layers

        channel_layers.backends.clear()
        try:
            assert [m.id for m in check_channel_layer()] == ["voiceconv.W024"]
        finally:
            channel_layers.backends.clear()


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not REDIS_URL, reason="needs Redis (REDIS_URL); CI sets it")
async def test_an_idle_call_on_redis_logs_no_failure_and_takes_a_hang_up(
    e2e_server: ServerProcess, standin: RealtimeStandIn, server_log: object
) -> None:
    from channels.layers import get_channel_layer

    from voiceconv.consumers import MediaStreamConsumer

    client = await enter_call(e2e_server)
    session = await standin.wait_for_session(0, timeout=10)
    await session.expect_event("session.update")
    await asyncio.sleep(15)  # idle: longer than a few of the layer's blocking receives
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send(MediaStreamConsumer.group_name(client.call_sid),
                           {"type": "voiceconv.hangup", "reason": "agent_ended"})
    await play_until_closed(client)
    call = await wait_for_call(client.call_sid, ended=True)
    assert call.end_reason == "agent_ended"
    log = server_log()  # type: ignore[operator]
    assert "channel layer receive failed" not in log
    assert "misconfigured" not in log
