from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"

    def ready(self) -> None:
        from django.contrib import admin
        from django.contrib.auth.signals import user_logged_out
        from django.core.signals import request_finished
        from django.db.backends.signals import connection_created

        from dashboard.auth import BrakedAdminAuthenticationForm, end_sockets_of_session
        from dashboard.request_threads import close_request_thread_connections
        from streams.pipeline.checkpoints import set_checkpoint_interval

        # The admin's login form says "too many attempts" when the brake refused (dashboard/auth.py).
        admin.site.login_form = BrakedAdminAuthenticationForm
        # Logging out closes the session's open websockets (4401).
        user_logged_out.connect(end_sockets_of_session, dispatch_uid="streamscope-end-sockets")
        # A finished request's SQLite connection is closed with it, not when its thread is collected.
        request_finished.connect(close_request_thread_connections, dispatch_uid="streamscope-request-threads")
        # SQLite checkpoints its log every ~4 MB whatever the page size, or at the database thread's
        # lulls once the event loop took that over (streams/pipeline/checkpoints.py).
        connection_created.connect(set_checkpoint_interval, dispatch_uid="streamscope-sqlite-checkpoints")
