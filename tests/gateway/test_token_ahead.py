"""A stream's request from a token this process found live moments ago goes on while the token is
checked again (dashboard/api/gateway.py, DirectRequest.respond; streams/gateway/proxy.py, forward):
the check's database trip is out of the time to first byte, and a token revoked meanwhile (by any
process) still gets nothing back and leaves nothing behind."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from dashboard import tokens
from dashboard.api import gateway as gateway_api
from dashboard.api.gateway import GatewayASGI
from dashboard.models import ApiToken
from streams.gateway import proxy
from streams.models import Run
from tests.gateway.test_asgi import SEEDED, URL, Exchange, auth, django_app

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.server]


class Sent:
    """The upstream requests the gateway sent, and their answers once they came."""

    def __init__(self) -> None:
        self.requests = 0
        self.dropped = 0  # cancelled before their answer came (the connection closed), or the answer closed

    def clear(self) -> None:
        self.requests = self.dropped = 0


@pytest.fixture
def sends(monkeypatch) -> Sent:
    sent = Sent()
    real = proxy._send

    async def send(request, headers):
        sent.requests += 1
        try:
            response = await real(request, headers)
        except asyncio.CancelledError:
            sent.dropped += 1
            raise
        close = response.aclose

        async def aclose():
            sent.dropped += 1
            await close()

        response.aclose = aclose
        return response

    monkeypatch.setattr(proxy, "_send", send)
    return sent


def checks_after(monkeypatch, sends: Sent, seen: list[bool]) -> None:
    """The token check records whether the upstream request was already sent when it was made."""
    real = tokens.token_owner

    async def token_owner(secret):
        await asyncio.sleep(0.05)  # a slow database: the request, if it goes ahead, goes meanwhile
        seen.append(sends.requests > 0)
        return await real(secret)

    monkeypatch.setattr(gateway_api, "token_owner", token_owner)


async def stream(secret: str, body: dict | None = None) -> Exchange:
    payload = json.dumps(body or SEEDED).encode()
    return await asyncio.wait_for(Exchange("POST", f"{URL}/responses", payload, auth(secret)).run(
        GatewayASGI(django_app())), 30)


async def test_a_stream_goes_on_while_a_token_found_live_moments_ago_is_checked_again(
        sim_upstream, token, sends, monkeypatch):
    assert (await stream(token)).status == 200  # found live: vouched for
    sends.clear()
    seen: list[bool] = []
    checks_after(monkeypatch, sends, seen)
    exchange = await stream(token)
    assert exchange.status == 200 and b"response.completed" in b"".join(exchange.chunks)
    assert seen == [True]  # the request was on its way before the check answered


async def test_a_token_never_checked_here_is_checked_before_anything_is_sent(sim_upstream, token, sends, monkeypatch):
    seen: list[bool] = []
    checks_after(monkeypatch, sends, seen)
    assert (await stream(token)).status == 200
    assert seen == [False]


@pytest.mark.parametrize("body", [
    {**SEEDED, "stream": False},  # a whole answer would be generated anyway
    {**SEEDED, "background": True},  # a background response goes on upstream after we close
], ids=["whole", "background"])
async def test_only_a_new_foreground_stream_goes_ahead(sim_upstream, token, sends, monkeypatch, body):
    assert (await stream(token)).status == 200
    sends.clear()
    seen: list[bool] = []
    checks_after(monkeypatch, sends, seen)
    await stream(token, body)
    assert seen == [False]


async def test_a_token_revoked_elsewhere_meanwhile_gets_nothing_and_leaves_nothing(sim_upstream, user, sends):
    _token, secret = await sync_to_async(tokens.issue_token)(user)
    assert (await stream(secret)).status == 200
    runs = await Run.objects.acount()
    # Revoked by another process: this one's memory of the token is not told.
    await ApiToken.objects.filter(owner=user).aupdate(revoked_at=timezone.now())
    sends.clear()
    refused = await stream(secret)
    assert refused.status == 401
    assert json.loads(b"".join(refused.chunks))["error"]["code"] == "invalid_api_key"
    assert "x-streamscope-run" not in refused.headers
    assert sends.requests == 1  # it went ahead, and was dropped
    for _ in range(100):  # cancelled, or its answer closed unread (a task beside the refusal)
        if sends.dropped:
            break
        await asyncio.sleep(0.02)
    assert sends.dropped == 1
    sends.clear()
    assert (await stream(secret)).status == 401
    assert sends.requests == 0  # refused once: forgotten, so checked first from then on
    assert await Run.objects.acount() == runs


async def test_refusals_before_sending_wait_for_the_check(sim_upstream, user, sends, settings):
    """A revoked token learns nothing from the gateway's other refusals."""
    _token, secret = await sync_to_async(tokens.issue_token)(user)
    assert (await stream(secret)).status == 200
    await ApiToken.objects.filter(owner=user).aupdate(revoked_at=timezone.now())
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    refused = await stream(secret, {**SEEDED, "input": "x" * 200})
    assert refused.status == 401


def test_vouching_is_remembered_for_a_while_and_forgotten_on_refusal_or_revocation(user, monkeypatch):
    token, secret = tokens.issue_token(user)
    assert tokens.vouched_owner(secret) is None
    assert asyncio.run(tokens.token_owner(secret)).pk == user.pk
    assert tokens.vouched_owner(secret).pk == user.pk
    monkeypatch.setattr(tokens, "VOUCHED_FOR_S", 0.0)
    assert tokens.vouched_owner(secret) is None  # too long ago
    monkeypatch.undo()
    tokens.revoke_token(token)  # revoked in this process: forgotten here at once
    assert tokens.vouched_owner(secret) is None
    other, other_secret = tokens.issue_token(user)
    asyncio.run(tokens.token_owner(other_secret))
    ApiToken.objects.filter(pk=other.pk).update(revoked_at=timezone.now())
    assert tokens.vouched_owner(other_secret) is not None
    assert asyncio.run(tokens.token_owner(other_secret)) is None  # refused: forgotten
    assert tokens.vouched_owner(other_secret) is None
