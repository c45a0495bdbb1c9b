"""A stand-in for what a Twisted transport asks of its reactor when it buffers."""


class Reactor:
    """Records which transports asked to be watched for writing (a real reactor would poll them)."""

    def __init__(self) -> None:
        self.writers: set = set()

    def addWriter(self, writer) -> None:  # noqa: N802 (Twisted's names)
        self.writers.add(writer)

    def removeWriter(self, writer) -> None:  # noqa: N802
        self.writers.discard(writer)
