"""URL map: pages, the JSON API, the built-in simulator, auth and admin."""

from django.contrib import admin
from django.urls import include, path

from dashboard.api import compare as compare_api
from dashboard.api import fanout as fanout_api
from dashboard.api import gateway as gateway_api
from dashboard.api import insights as insights_api
from dashboard.api import replay as replay_api
from dashboard.api import runs as runs_api
from dashboard.auth import BrakedPasswordChangeView, RateLimitedLoginView, admin_login, admin_password_change
from dashboard.pages import compare, exports, imports, insights, replay, review, runs, tokens

urlpatterns = [
    path("", runs.playground, name="playground"),
    path("runs/", runs.run_list, name="run_list"),
    path("runs/<int:run_id>/", runs.run_detail, name="run_detail"),
    path("runs/<int:run_id>/pin/", runs.run_pin, name="run_pin"),
    # Import and export of recorded streams.
    path("runs/import/", imports.import_run, name="run_import"),
    path("runs/<int:run_id>/export.sse", exports.export_sse, name="run_export_sse"),
    path("runs/<int:run_id>/export.jsonl", exports.export_jsonl, name="run_export_jsonl"),
    path("api/runs/", runs_api.runs, name="api_runs"),
    path("api/runs/<int:run_id>/", runs_api.run_detail, name="api_run_detail"),
    path("api/runs/<int:run_id>/events/", runs_api.run_events, name="api_run_events"),
    path("api/runs/<int:run_id>/cancel/", runs_api.run_cancel, name="api_run_cancel"),
    path("api/providers/", runs_api.providers, name="api_providers"),
    # The fleet: latency and outcomes per model or provider over time.
    path("insights/", insights.insights, name="insights"),
    path("api/insights/", insights_api.insights, name="api_insights"),
    # Timelines: replay, replay as an upstream, compare, fan-out groups.
    path("runs/<int:run_id>/replay/", replay.replay, name="run_replay"),
    path("compare/", compare.compare, name="compare"),
    path("replay/<int:run_id>/v1/responses", replay_api.responses, name="replay_upstream"),
    path("api/runs/<int:run_id>/replay-token/", replay_api.replay_token, name="api_replay_token"),
    path("api/compare/", compare_api.compare, name="api_compare"),
    path("api/groups/", fanout_api.groups, name="api_groups"),
    path("api/groups/<int:group_id>/", fanout_api.group_detail, name="api_group_detail"),
    # Review queue.
    path("review/", review.review_queue, name="review_queue"),
    path("review/<int:run_id>/verdict/", review.review_verdict, name="review_verdict"),
    path("review/<int:run_id>/skip/", review.review_skip, name="review_skip"),
    # Personal API tokens (Authorization: Bearer on the JSON API and the gateway).
    path("settings/tokens/", tokens.tokens, name="tokens"),
    # The recording gateway: an app's OpenAI-compatible requests, forwarded and recorded as runs.
    path("gateway/<str:provider>/v1/<path:path>", gateway_api.proxy, name="gateway"),
    path("sim/v1/", include("simulator.urls")),
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    # Changing a password checks the old one behind the login brake (dashboard/auth.py).
    path("accounts/password_change/", BrakedPasswordChangeView.as_view(), name="password_change"),
    path("accounts/", include("django.contrib.auth.urls")),
    # The admin's login through the same brake's 429 (the brake itself is in the auth backend).
    path("admin/login/", admin_login, name="admin_login"),
    path("admin/password_change/", admin.site.admin_view(admin_password_change)),
    path("admin/", admin.site.urls),
]

handler400 = "dashboard.pages.errors.bad_request"
handler404 = "dashboard.pages.errors.not_found"
