"""Tests of streams/models.py and streams/admin.py."""
