"""Tests of streams/upstream/: the upstream HTTP client and its network backend."""
