"""Tests of streams/live/: executing runs, launchers and workers, recovery, fan-out groups, scale-out."""
