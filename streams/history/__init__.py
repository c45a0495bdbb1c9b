"""Stored runs as material: import (SSE, JSONL, HAR), export, replay timing, replay-as-upstream and
comparing runs side by side.
"""
