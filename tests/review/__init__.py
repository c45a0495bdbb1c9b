"""Tests of streams/review/: live moderation, the rules engine, the review queue and verdicts."""
