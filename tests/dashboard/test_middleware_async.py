"""Django's middleware with its hooks on the event loop under ASGI (dashboard/middleware.py): the same
answers as Django's own, the database reached only on the request's thread, the user loaded once."""

from __future__ import annotations

import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from django.contrib import messages
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.decorators import login_not_required
from django.contrib.sessions.models import Session
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpResponse
from django.test import AsyncClient, AsyncRequestFactory

from dashboard import middleware
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db(transaction=True)


async def _ok(request):
    return HttpResponse("ok")


def _chain(get_response, *classes):
    """``classes`` wrapped around ``get_response``, outermost first, as Django's handler stacks them."""
    for cls in reversed(classes):
        get_response = cls(get_response)
    return get_response


async def _view_middleware(request, view):
    """What the handler does between the middleware and the view: each process_view in turn."""
    for cls in (middleware.LoginRequiredMiddleware,):
        answer = await cls(_ok).process_view(request, view, (), {})
        if answer is not None:
            return answer
    return await view(request)


def test_the_asgi_stack_is_async_all_the_way_down():
    """No middleware of ours is put behind a sync adapter (WhiteNoise, sync only, used to put the
    whole stack below it behind a thread hop each way)."""
    layer = ASGIHandler()._middleware_chain
    seen = []
    while layer is not None:
        assert not isinstance(layer, SyncToAsync), f"a thread hop in front of {seen[-1] if seen else 'the stack'}"
        instance = getattr(layer, "__wrapped__", None)
        if instance is None or not hasattr(instance, "get_response"):
            break
        seen.append(type(instance).__name__)
        layer = instance.get_response
    assert "WhiteNoiseMiddleware" in seen and "SessionMiddleware" in seen


async def test_hooks_without_io_run_on_the_event_loop():
    chain = _chain(_ok, middleware.WhiteNoiseMiddleware, middleware.SessionMiddleware,
                   middleware.CommonMiddleware, middleware.AuthenticationMiddleware, middleware.MessageMiddleware,
                   middleware.ContentSecurityPolicyMiddleware)
    hops = []
    original = SyncToAsync.__call__

    async def counting(self, *args, **kwargs):
        hops.append(getattr(self.func, "__qualname__", repr(self.func)))
        return await original(self, *args, **kwargs)

    SyncToAsync.__call__ = counting
    try:
        response = await chain(AsyncRequestFactory().get("/api/runs/"))
    finally:
        SyncToAsync.__call__ = original
    assert response.status_code == 200
    assert "Content-Security-Policy" in response
    assert all("process_" not in h for h in hops), f"hooks run through a thread hop: {hops}"


async def test_a_modified_session_is_saved_and_its_cookie_set():
    async def view(request):
        request.session["note"] = "kept"
        return HttpResponse("ok")

    response = await _chain(view, middleware.SessionMiddleware)(AsyncRequestFactory().get("/"))
    key = response.cookies["sessionid"].value
    session = await Session.objects.aget(session_key=key)
    assert session.get_decoded() == {"note": "kept"}
    assert "Cookie" in response["Vary"]


async def test_an_untouched_session_sets_no_cookie_and_no_vary():
    response = await _chain(_ok, middleware.SessionMiddleware)(AsyncRequestFactory().get("/"))
    assert "sessionid" not in response.cookies
    assert not response.has_header("Vary")
    assert await Session.objects.acount() == 0


async def test_an_emptied_session_deletes_its_cookie(user):
    client = AsyncClient()
    await sync_to_async(client.force_login)(user)
    request = AsyncRequestFactory().get("/")
    request.COOKIES["sessionid"] = client.cookies["sessionid"].value

    async def view(request):
        await request.session.aflush()
        return HttpResponse("ok")

    response = await _chain(view, middleware.SessionMiddleware)(request)
    assert response.cookies["sessionid"].value == ""


async def test_added_messages_are_stored_for_the_next_page():
    async def view(request):
        await sync_to_async(messages.success)(request, "imported")
        return HttpResponse("ok")

    response = await _chain(view, middleware.SessionMiddleware, middleware.MessageMiddleware)(
        AsyncRequestFactory().get("/"))
    assert response.cookies["messages"].value  # signed, encoded: the next page's storage reads it


async def test_login_required_pages_redirect_strangers_and_admit_users(user):
    stranger = AsyncRequestFactory().get("/runs/")
    for cls in (middleware.SessionMiddleware, middleware.AuthenticationMiddleware):
        cls(_ok).process_request(stranger)
    answer = await _view_middleware(stranger, _ok)
    assert answer.status_code == 302 and answer["Location"] == "/accounts/login/?next=/runs/"

    open_view = login_not_required(_ok)
    assert (await _view_middleware(stranger, open_view)).status_code == 200

    client = AsyncClient()
    await sync_to_async(client.force_login)(user)
    member = AsyncRequestFactory().get("/runs/")
    member.COOKIES["sessionid"] = client.cookies["sessionid"].value
    for cls in (middleware.SessionMiddleware, middleware.AuthenticationMiddleware):
        cls(_ok).process_request(member)
    assert (await _view_middleware(member, _ok)).status_code == 200
    assert (await member.auser()).pk == user.pk


async def test_a_static_file_is_served_and_other_paths_go_on():
    chain = _chain(_ok, middleware.WhiteNoiseMiddleware)
    static = await chain(AsyncRequestFactory().get("/static/favicon.svg"))
    assert static.status_code == 200 and static["Content-Type"].startswith("image/svg")
    assert (await chain(AsyncRequestFactory().get("/api/runs/"))).content == b"ok"


async def test_an_api_request_loads_its_user_once(user, monkeypatch):
    """LoginRequiredMiddleware read ``request.user`` and the API view ``request.auser()``: two
    separate caches, the user read twice (and a thread hop each)."""
    loads = []
    original_sync, original_async = ModelBackend.get_user, ModelBackend.aget_user

    def get_user(self, user_id):
        loads.append("sync")
        return original_sync(self, user_id)

    async def aget_user(self, user_id):
        loads.append("async")
        return await original_async(self, user_id)

    monkeypatch.setattr(ModelBackend, "get_user", get_user)
    monkeypatch.setattr(ModelBackend, "aget_user", aget_user)
    run = await sync_to_async(make_run)(user)
    client = AsyncClient()
    await sync_to_async(client.force_login)(user)
    response = await client.get(f"/api/runs/{run.pk}/")
    assert response.status_code == 200
    assert len(loads) == 1, loads


async def test_pages_login_and_logout_through_the_asgi_stack(user):
    """The whole stack under ASGI: strangers sent to log in, a login saves the session (the hook on
    the request's thread), pages then open, a logout ends it, and a form without its CSRF token is
    refused (Django's CsrfViewMiddleware, unchanged)."""
    run = await sync_to_async(make_run)(user)
    client = AsyncClient()
    pages = ("/", "/runs/", f"/runs/{run.pk}/", "/insights/", "/settings/tokens/")
    for url in pages:
        response = await client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/accounts/login/"), url
    assert (await client.get("/accounts/login/")).status_code == 200
    response = await client.post("/accounts/login/", {"username": "alice", "password": "alice-pass-123"})
    assert response.status_code == 302 and response.cookies["sessionid"].value
    for url in pages:
        assert (await client.get(url)).status_code == 200, url
    assert (await client.post("/accounts/logout/")).status_code == 302
    assert (await client.get("/runs/")).status_code == 302
    strict = AsyncClient(enforce_csrf_checks=True)
    response = await strict.post("/accounts/login/", {"username": "alice", "password": "alice-pass-123"})
    assert response.status_code == 403
