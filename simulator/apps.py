from django.apps import AppConfig


class SimulatorConfig(AppConfig):
    """The built-in upstream: an app of its own that imports nothing of ``streams``."""

    name = "simulator"
    verbose_name = "Simulator"
