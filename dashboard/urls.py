"""URL map: pages, the JSON API, the built-in simulator, auth and admin."""

from django.contrib import admin
from django.urls import include, path

from dashboard import api, compare_api, replay_api, timeline_views, views
from dashboard import review_views
from dashboard import import_views
from dashboard.auth import RateLimitedLoginView

urlpatterns = [
    path("", views.playground, name="playground"),
    path("runs/", views.run_list, name="run_list"),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
    # Import and export of recorded streams (issue 3).
    path("runs/import/", import_views.import_run, name="run_import"),
    path("runs/<int:run_id>/export.sse", import_views.export_sse, name="run_export_sse"),
    path("runs/<int:run_id>/export.jsonl", import_views.export_jsonl, name="run_export_jsonl"),
    path("api/runs/", api.runs, name="api_runs"),
    path("api/runs/<int:run_id>/", api.run_detail, name="api_run_detail"),
    path("api/runs/<int:run_id>/events/", api.run_events, name="api_run_events"),
    path("api/runs/<int:run_id>/cancel/", api.run_cancel, name="api_run_cancel"),
    path("api/providers/", api.providers, name="api_providers"),
    # Timelines: replay, replay as an upstream, compare, fan-out groups (issue 4).
    path("runs/<int:run_id>/replay/", timeline_views.replay, name="run_replay"),
    path("compare/", timeline_views.compare, name="compare"),
    path("replay/<int:run_id>/v1/responses", replay_api.responses, name="replay_upstream"),
    path("api/runs/<int:run_id>/replay-token/", replay_api.replay_token, name="api_replay_token"),
    path("api/compare/", compare_api.compare, name="api_compare"),
    path("api/groups/", compare_api.groups, name="api_groups"),
    path("api/groups/<int:group_id>/", compare_api.group_detail, name="api_group_detail"),
    # Review queue (issue 5).
    path("review/", review_views.review_queue, name="review_queue"),
    path("review/<int:run_id>/verdict/", review_views.review_verdict, name="review_verdict"),
    path("review/<int:run_id>/skip/", review_views.review_skip, name="review_skip"),
    path("sim/v1/", include("streams.simulator.urls")),
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]

handler404 = "dashboard.views.not_found"
