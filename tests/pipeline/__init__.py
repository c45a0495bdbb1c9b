"""Tests of streams/pipeline/: batched stores, publishing rounds, the flush clock."""
