"""ASGI entry point: HTTP through Django, websockets through Channels (served by Daphne)."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

from django.core.asgi import get_asgi_application  # noqa: E402

# Django must be set up before anything imports models (consumers do).
django_asgi_app = get_asgi_application()

import gc  # noqa: E402
import logging  # noqa: E402

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from dashboard.api.gateway import GatewayASGI  # noqa: E402
from dashboard.pacing import PacedResponses  # noqa: E402
from dashboard.routing import websocket_urlpatterns  # noqa: E402
from dashboard.simulator_gate import OpenSimulatorASGI  # noqa: E402
from streams.event_loop import running_loop_name  # noqa: E402
from streams.live.recovery import start_housekeeping  # noqa: E402
from streams.upstream.providers import note_listening_address, simulator_url  # noqa: E402

log = logging.getLogger(__name__)


class FirstConnection:
    """What this process can only learn once it serves: on the first connection, start the recovery
    sweep on the server's event loop (Daphne sends no ASGI lifespan events) and learn the address
    the server listens on, which is where its own runs reach the built-in simulator (however the
    server was started: `make run`, `daphne -p 9000 ...`, a Procfile)."""

    def __init__(self, app):
        self.app = app
        self.started = False

    async def __call__(self, scope, receive, send):
        if not self.started and scope["type"] in ("http", "websocket"):
            self.started = True
            log.info("serving on %s's event loop", running_loop_name())
            server = scope.get("server")
            if server and server[1] and note_listening_address(str(server[0]), int(server[1])):
                if settings.STREAMSCOPE_SIMULATOR_ENABLED and not settings.STREAMSCOPE_SIMULATOR_URL:
                    log.info("runs reach the built-in simulator at %s", simulator_url())
            if settings.STREAMSCOPE_RECOVERY_INTERVAL_S:
                start_housekeeping()
        return await self.app(scope, receive, send)


if settings.STREAMSCOPE_SIMULATOR_URL:
    log.info("runs reach the built-in simulator at %s (STREAMSCOPE_SIMULATOR_URL)", simulator_url())
elif settings.STREAMSCOPE_SIMULATOR_ENABLED:
    log.info("runs will reach the built-in simulator at this server's own address, learned from the "
                "first connection it serves")

application = FirstConnection(ProtocolTypeRouter(
    {
        # /gateway/ to the gateway, /sim/v1/ to the simulator when its gate is open (past Django), the rest to
        # Django, whose responses wait while their client is far behind (the gateway's relay paces itself)
        "http": OpenSimulatorASGI(GatewayASGI(PacedResponses(django_asgi_app))),
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
))

# Everything loaded so far (Django, the apps, URL conf, templates' code) lives as long as the
# process: moved out of the collector's generations, full collections stop walking it again and
# again (insights by provider, hourly over a month: ~8% less CPU per request; docs/performance.md).
gc.freeze()
