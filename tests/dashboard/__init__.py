"""Tests of dashboard/: the API, pages, websocket consumers, permissions and security."""
