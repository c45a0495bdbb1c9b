"""What several pages embed: the event catalogue (colours, families, deltas) and the run statuses."""

from __future__ import annotations

from streams.models import ACTIVE_STATUSES, TERMINAL_STATUSES
from streams.protocol.catalogue import catalogue_json

# Once per process: the pages' renderer reads it from the embedded JSON.
CATALOGUE = {
    **catalogue_json(),
    "statuses": {"terminal": sorted(TERMINAL_STATUSES), "active": sorted(ACTIVE_STATUSES)},
}
