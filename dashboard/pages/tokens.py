"""The API tokens page (/settings/tokens/): make, name and revoke personal tokens."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from dashboard.models import ApiToken
from dashboard.tokens import issue_token, revoke_token


@never_cache
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    new_secret = None
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "create":
            _token, new_secret = issue_token(request.user, request.POST.get("name", ""))
        else:
            token = ApiToken.objects.filter(owner=request.user, pk=request.POST.get("token") or 0).first()
            if token is None:
                return HttpResponse("No such token (or it is not yours).", status=404, content_type="text/plain")
            if action == "revoke":
                revoke_token(token)
            elif action == "rename":
                token.name = request.POST.get("name", "").strip()[:100]
                token.save(update_fields=["name"])
            else:
                return HttpResponse("Unknown action.", status=400, content_type="text/plain")
            return redirect("tokens")
    # The new secret is rendered into this one answer only (never_cache; not kept anywhere).
    context = {
        "tokens": ApiToken.objects.filter(owner=request.user),
        "new_secret": new_secret,
        "gateway_url": request.build_absolute_uri("/gateway/simulator/v1"),
    }
    return render(request, "tokens.html", context, status=201 if new_secret else 200)
