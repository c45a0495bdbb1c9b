"""The write/publish pipeline: batches of event records stored (the truth) and then published to
the channel-layer group a run's viewers join, paced by one flush clock per process; the channel
layers themselves (in-memory and Redis) live here too.
"""
