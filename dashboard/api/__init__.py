"""The JSON API under ``/api/`` (and the OpenAI-shaped replay upstream): one module per area.

Every answer is JSON; errors are ``{"error": {"message", "code"}}`` with a fitting 4xx status.
Who may see or act on a run is decided by ``Run.objects.visible_to`` / ``controllable_by``.
"""
