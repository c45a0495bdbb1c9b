// Run statuses, as streams/models.py defines them (RunStatus, ACTIVE_STATUSES, TERMINAL_STATUSES):
// a run is queued, then streaming, then ends in one of the terminal statuses. The pages do not
// embed these sets yet, so this is the browser's one copy; keep it in step with models.py.

export const ACTIVE_STATUSES = new Set(["queued", "streaming"]);
export const TERMINAL_STATUSES = new Set(["completed", "incomplete", "failed", "cancelled", "interrupted"]);

export function isTerminalStatus(status) {
  return TERMINAL_STATUSES.has(status);
}
