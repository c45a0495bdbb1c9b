"""Running runs: creating and cancelling them, executing one (upstream → pipeline), where it
executes (in-process task or stream worker), recovery of runs whose process died, and fan-out
groups that start several at once.
"""
