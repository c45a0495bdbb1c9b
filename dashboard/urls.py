"""URL map: pages, the JSON API, the built-in simulator, auth and admin."""

from django.contrib import admin
from django.urls import include, path

from dashboard import api, views
from dashboard.auth import RateLimitedLoginView

urlpatterns = [
    path("", views.playground, name="playground"),
    path("runs/", views.run_list, name="run_list"),
    path("runs/<int:run_id>/", views.run_detail, name="run_detail"),
    path("api/runs/", api.runs, name="api_runs"),
    path("api/runs/<int:run_id>/", api.run_detail, name="api_run_detail"),
    path("api/runs/<int:run_id>/events/", api.run_events, name="api_run_events"),
    path("api/runs/<int:run_id>/cancel/", api.run_cancel, name="api_run_cancel"),
    path("api/providers/", api.providers, name="api_providers"),
    path("sim/v1/", include("streams.simulator.urls")),
    path("accounts/login/", RateLimitedLoginView.as_view(), name="login"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("admin/", admin.site.urls),
]

handler404 = "dashboard.views.not_found"
