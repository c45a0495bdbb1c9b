"""The streaming protocol as data: SSE decoding, the event catalogue, the event record, a run's
metrics and rebuilding its output from events.

Pure Python: nothing here imports Django or does I/O, so every other room may use it and its tests
need no database.
"""
