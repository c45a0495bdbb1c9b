"""What Django refuses before any view answers, on the gateway and the API: the caller's own error
shape (an SDK parses OpenAI's error JSON; the API's clients parse the API's), never an HTML page."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/gateway/simulator/v1/models", "/gateway/simulator/v1/responses"])
def test_a_host_not_allowed_gets_openai_error_json_on_the_gateway(path, settings):
    settings.ALLOWED_HOSTS = ["streamscope.example"]
    response = Client().get(path, HTTP_HOST="elsewhere.example")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "bad_request"
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_host_not_allowed_gets_the_apis_json_on_the_api(settings):
    settings.ALLOWED_HOSTS = ["streamscope.example"]
    response = Client().get("/api/runs/", HTTP_HOST="elsewhere.example")
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_request"


def test_a_host_not_allowed_gets_djangos_page_elsewhere(settings):
    settings.ALLOWED_HOSTS = ["streamscope.example"]
    response = Client().get("/accounts/login/", HTTP_HOST="elsewhere.example")
    assert response.status_code == 400 and "json" not in response["Content-Type"]


def test_a_path_under_the_gateway_that_matches_no_route_is_an_openai_404():
    response = Client().get("/gateway/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "unknown_url"
