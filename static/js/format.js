// Numbers for people, the same everywhere on the pages: durations in milliseconds (charts,
// timelines, metric cards, replay positions, compare tables) and sizes in bytes (item cards).

/**
 * Milliseconds as "12.3 ms", "456 ms", "1.23 s" or "12.3 s"; "–" for no value.
 * `digits`: decimals below 100 ms (0: whole milliseconds). `secondsFrom`: from how many
 * milliseconds on the value is shown in seconds (the run view's cards use 10000: "1234 ms").
 */
export function fmtMs(value, digits = 1, secondsFrom = 1000) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const abs = Math.abs(value);
  if (abs >= 10000) return `${(value / 1000).toFixed(1)} s`;
  if (abs >= secondsFrom) return `${(value / 1000).toFixed(2)} s`;
  if (abs >= 100 || digits === 0) return `${Math.round(value)} ms`;
  return `${value.toFixed(digits)} ms`;
}

/** Human size: 1234 -> "1.2 KB". */
export function fmtBytes(n) {
  if (!Number.isFinite(n)) return "";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}
