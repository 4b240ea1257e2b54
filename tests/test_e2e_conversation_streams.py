"""Rule 11 end to end: streams that never start are closed, unsigned upgrades refused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.exceptions import InvalidStatus

from tests.conftest import AUTH_TOKEN, PUBLIC_URL
from tests.e2e import CALLER, NUMBER, track
from voiceconv import security
from voiceconv.testing import (
    RealtimeStandIn,
    TwilioStreamClient,
    new_sid,
)
from voiceconv.testing.server import ServerProcess

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("hang_up_leftovers"),
]


async def test_a_stream_that_never_sends_start_is_closed(
    e2e_server: ServerProcess, standin: RealtimeStandIn
) -> None:
    client = track(
        await TwilioStreamClient.from_webhook(
            e2e_server.http_url,
            auth_token=AUTH_TOKEN,
            public_url=PUBLIC_URL,
            form={"From": CALLER, "To": NUMBER},
        )
    )
    await client.connect()
    await client.send_connected()
    # "A few seconds": generous here, the machine may be loaded; never forever.
    await client.wait_closed(timeout=30)
    assert client.closed.is_set()
    assert standin.sessions == []


async def test_an_upgrade_without_a_twilio_signature_is_refused(
    e2e_server: ServerProcess, standin: RealtimeStandIn, server_log: Any
) -> None:
    call_sid = new_sid("CA")
    client = track(
        TwilioStreamClient(
            e2e_server.ws_url + "/twilio/stream/",
            call_sid=call_sid,
            auth_token=None,  # no X-Twilio-Signature header at all
            custom_parameters={"call_token": security.make_stream_token(call_sid)},
        )
    )
    assert not any(k.lower() == "x-twilio-signature" for k, _ in client.handshake_headers())
    with pytest.raises(InvalidStatus) as exc:
        await client.start_call()
    assert exc.value.response.status_code == 403
    await asyncio.sleep(0.5)
    assert standin.sessions == [] and standin.handshakes == []
    assert "Traceback" not in server_log()
