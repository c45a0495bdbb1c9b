"""ASGI entry point: HTTP through Django, websockets through Channels (served by Daphne)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

# Django must be set up before anything imports models (consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from django.conf import settings  # noqa: E402

from dashboard.routing import websocket_urlpatterns  # noqa: E402
from streams.live.recovery import start_housekeeping  # noqa: E402


class StartHousekeeping:
    """Start this process's recovery sweep (taking over runs whose process died) on the event loop
    of the first connection. Daphne sends no ASGI lifespan events, and this is the public way to be
    on its loop; every browser watching a run reconnects within seconds, so the sweep starts then."""

    def __init__(self, app):
        self.app = app
        self.started = False

    async def __call__(self, scope, receive, send):
        if not self.started and scope["type"] in ("http", "websocket"):
            self.started = True
            if settings.STREAMSCOPE_RECOVERY_INTERVAL_S:
                start_housekeeping()
        return await self.app(scope, receive, send)


application = StartHousekeeping(ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
))
