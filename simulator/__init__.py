"""The built-in OpenAI-compatible upstream: scripted, deterministic streams served under /sim/v1/.

Pure parts (no Django, no I/O): :mod:`.scenarios` (the catalogue, ``build_events``),
:mod:`.scripts`, :mod:`.builders`, :mod:`.items`, :mod:`.hosted`, :mod:`.text`, :mod:`.images`,
:mod:`.request`, :mod:`.pacing`, :mod:`.chat`, :mod:`.moderation`. HTTP parts: :mod:`.views`
(timing, faults), :mod:`.background` (resumable responses), :mod:`.connection` (drops).
docs/simulator.md describes the scenarios and the ``sim_`` knobs.
"""
