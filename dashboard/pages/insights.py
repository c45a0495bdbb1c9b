"""Page: insights, per model or provider, drawn from GET /api/insights/ by static/js/pages/insights.js."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from streams.protocol.metrics import DEFINITIONS


def insights(request: HttpRequest) -> HttpResponse:
    return render(request, "insights.html", {"form": request.GET, "definitions": DEFINITIONS})
