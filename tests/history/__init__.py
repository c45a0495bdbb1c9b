"""Tests of streams/history/: import, export, replay and comparison of stored runs."""
