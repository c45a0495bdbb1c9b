"""Routes of the simulator, mounted at /sim/v1/ (OpenAI paths without the /v1 prefix)."""

from django.urls import path, re_path

from simulator import views

app_name = "simulator"

urlpatterns = [
    path("models", views.list_models, name="models"),
    path("models/<str:model_id>", views.model_detail, name="model"),
    path("responses", views.create_response, name="responses"),
    path("responses/<str:response_id>", views.response_detail, name="response"),
    path("responses/<str:response_id>/cancel", views.cancel_response, name="cancel"),
    path("chat/completions", views.chat_completions, name="chat_completions"),
    path("moderations", views.moderations, name="moderations"),
    # Anything else answers like the real API does, not with Django's HTML 404 page.
    re_path(r"^(?P<path>.*)$", views.unknown_endpoint, name="unknown"),
]
