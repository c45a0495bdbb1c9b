// Checks on JSON values of unknown shape (event payloads as upstreams sent them), shared by the
// output model, the Chat Completions fold and the item renderers. The Python side's twins are the
// helpers in streams/protocol/output_model.py (int_or_none, _str).

/** A plain object: not null, not an array. */
export const isObject = (value) => value !== null && typeof value === "object" && !Array.isArray(value);

/** A non-negative integer (an output_index, a content_index…), or null. */
export const index = (value) => (Number.isInteger(value) && value >= 0 ? value : null);

/** A string, or `fallback` (null unless given; renderers pass "" to show nothing). */
export const str = (value, fallback = null) => (typeof value === "string" ? value : fallback);
