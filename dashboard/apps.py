from django.apps import AppConfig


class DashboardConfig(AppConfig):
    name = "dashboard"

    def ready(self) -> None:
        from django.contrib import admin
        from django.contrib.auth.signals import user_logged_out

        from dashboard.auth import BrakedAdminAuthenticationForm, end_sockets_of_session

        # The admin's login form says "too many attempts" when the brake refused (dashboard/auth.py).
        admin.site.login_form = BrakedAdminAuthenticationForm
        # Logging out closes the session's open websockets (4401).
        user_logged_out.connect(end_sockets_of_session, dispatch_uid="streamscope-end-sockets")
