"""Judging what models produced: moderation rules and their matchers, live moderation of a run
while it streams, the optional moderation model, verdicts and the review queue.
"""
