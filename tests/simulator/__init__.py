"""Tests of the simulator app: its pure scenario builders and its HTTP API."""
