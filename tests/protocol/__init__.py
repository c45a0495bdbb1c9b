"""Tests of streams/protocol/: SSE decoding, the event catalogue, metrics, rebuilding output."""
