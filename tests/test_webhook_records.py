"""The incoming-call webhook answers from the request alone; its row follows off the path.

Signed for real, posted through Django's test client; the row is written by the process-wide
writer thread, and ``call_received`` is sent once it is.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client, override_settings
from django.utils import timezone
from twilio.request_validator import RequestValidator

from voiceconv import security, signals
from voiceconv.events import CallInfo
from voiceconv.models import Agent, Call

from .db_faults import SQLiteLock, sqlite_only

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

TOKEN = "webhook-records-token-0123456789"
PUBLIC = "https://voice.example.com"
SID = "CA" + "7" * 32
FORM = {
    "AccountSid": "AC" + "0" * 32, "CallSid": SID, "CallStatus": "ringing",
    "Direction": "inbound", "From": "+14155550123", "To": "+14155550100",
}


@pytest.fixture(autouse=True)
def _secure() -> Iterator[None]:
    with override_settings(TWILIO_AUTH_TOKEN=TOKEN, VOICECONV={"PUBLIC_URL": PUBLIC}):
        yield


@pytest.fixture
def received() -> Iterator[list[dict[str, Any]]]:
    seen: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        seen.append(kwargs)

    signals.call_received.connect(receiver, dispatch_uid="test-webhook-records")
    yield seen
    signals.call_received.disconnect(dispatch_uid="test-webhook-records")


def post_webhook(form: dict[str, str] = FORM) -> Any:
    path = "/twilio/incoming/"
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, form)
    return Client().post(path, form, HTTP_X_TWILIO_SIGNATURE=signature)


def wait_for(what: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = what()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("not within the timeout")


def stream_parameters(response: Any) -> dict[str, str | None]:
    stream = ET.fromstring(response.content).find("Connect/Stream")
    assert stream is not None
    return {p.get("name"): p.get("value") for p in stream.findall("Parameter")}


def test_the_row_and_call_received_follow_the_answer(received: list[dict[str, Any]]) -> None:
    agent = Agent.objects.create(name="Front desk", slug="front", phone_numbers="+14155550100")
    response = post_webhook()
    assert response.status_code == 200
    params = stream_parameters(response)
    assert security.check_stream_token(params["call_token"] or "", SID) is None
    assert "agent" not in params  # picked where the row is written, and by the stream's claim
    call = wait_for(lambda: Call.objects.filter(twilio_call_sid=SID).first())
    assert (call.agent_id, call.status, call.direction) == (agent.pk, "ringing", "inbound")
    assert (call.from_number, call.to_number) == ("+14155550123", "+14155550100")
    assert call.webhook_received_at is not None
    wait_for(lambda: received)
    assert received[0]["call"].pk == call.pk and received[0]["agent"] == agent


@sqlite_only
def test_the_webhook_answers_while_the_database_is_locked(
    sqlite_lock: SQLiteLock, received: list[dict[str, Any]]
) -> None:
    """A database that cannot take writes (SQLite locked by a stuck writer) does not keep
    the caller waiting, and the call is still recorded once it can."""
    sqlite_lock.acquire()
    try:
        response = post_webhook()
        assert response.status_code == 200
        assert stream_parameters(response)["call_token"]
        time.sleep(0.5)  # the writer meets the lock meanwhile, and keeps the record
    finally:
        sqlite_lock.release()
    call = wait_for(lambda: Call.objects.filter(twilio_call_sid=SID).first())
    assert call.webhook_received_at is not None and call.status == "ringing"
    wait_for(lambda: received)


def test_a_stream_that_got_there_first_keeps_its_status() -> None:
    """Under load the row may wait for the writer's next tick while the stream starts: the
    claim creates the row, and the webhook's record fills in only what it lacks."""
    agent = Agent.objects.create(name="Front desk", slug="front", phone_numbers="+14155550100")
    info = CallInfo(call_sid=SID, stream_sid="MZ" + "1" * 32, account_sid="",
                    from_number="+14155550123", to_number="+14155550100", direction="")
    claim = Call.objects.claim_stream(info)
    assert not isinstance(claim, str)
    received_at = timezone.now()
    call, picked = Call.objects.record_webhook(
        SID, account_sid="AC1", from_number="+14155550123", to_number="+14155550100",
        direction="inbound", status="ringing", received_at=received_at)
    call.refresh_from_db()
    assert call.status == "in-progress" and call.twilio_stream_sid == info.stream_sid
    assert (call.webhook_received_at, call.twilio_account_sid, call.direction) == (
        received_at, "AC1", "inbound")
    assert call.agent_id == agent.pk and picked == agent


def test_a_retried_webhook_before_the_stream_refreshes_the_row() -> None:
    first = timezone.now()
    Call.objects.record_webhook(SID, direction="inbound", status="ringing", received_at=first)
    again = timezone.now()
    call, _ = Call.objects.record_webhook(SID, direction="inbound", status="ringing",
                                          account_sid="AC2", received_at=again)
    call.refresh_from_db()
    assert (call.webhook_received_at, call.twilio_account_sid) == (again, "AC2")
    assert Call.objects.filter(twilio_call_sid=SID).count() == 1


@sqlite_only
def test_a_claim_that_races_the_webhooks_row_takes_it() -> None:
    """The stream's claim finds no row, then inserts while the writer's insert of the
    webhook's row is committing: the claim takes that row instead of failing (which would
    start the call without its agent)."""
    agent = Agent.objects.create(name="Front desk", slug="front", phone_numbers="+14155550100")
    info = CallInfo(call_sid=SID, stream_sid="MZ" + "2" * 32, account_sid="",
                    from_number="+14155550123", to_number="+14155550100", direction="inbound")
    inserted, commit = threading.Event(), threading.Event()
    claims: list[Any] = []

    def writer() -> None:  # as the record writer does: the row, in a transaction of its own
        try:
            with transaction.atomic():
                Call.objects.create(twilio_call_sid=SID, agent=agent, status="ringing")
                inserted.set()
                commit.wait(30)
        finally:
            connection.close()

    def claim() -> None:
        try:
            claims.append(Call.objects.claim_stream(info))
        except Exception as exc:
            claims.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer), threading.Thread(target=claim)]
    threads[0].start()
    assert inserted.wait(30)
    threads[1].start()
    time.sleep(0.5)  # the claim has found no row and waits for the write lock
    commit.set()
    for thread in threads:
        thread.join(30)
    assert len(claims) == 1 and not isinstance(claims[0], (str, Exception)), claims
    call, picked = claims[0]
    assert picked == agent and call.twilio_call_sid == SID
    assert Call.objects.get(twilio_call_sid=SID).twilio_stream_sid == info.stream_sid
