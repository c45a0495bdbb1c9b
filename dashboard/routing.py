"""Websocket routes."""

from django.urls import path

from dashboard.consumers import RunConsumer
from dashboard.wall import RunsWallConsumer

websocket_urlpatterns = [
    path("ws/runs/<int:run_id>/", RunConsumer.as_asgi()),
    path("ws/wall/", RunsWallConsumer.as_asgi()),  # the runs list, live (dashboard/wall.py)
]
