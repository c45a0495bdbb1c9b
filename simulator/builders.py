"""Build one Response stream: dense ``sequence_number`` from 0, ids, the echoed Response object,
the lifecycle events and the message item (text, logprobs, annotations, refusal parts).

Every builder method is a generator of :class:`Step` (an event dict plus a pause hint for the
pacer; a plain text delta also carries its SSE frame, written with it). Every yielded dict is fresh
and never mutated afterwards, so a consumer may encode it late. The request's
``max_output_tokens`` is a budget: when it runs out, the current item ends ``incomplete``, later
items are skipped and the response ends with ``response.incomplete``.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from io import StringIO
from types import MappingProxyType
from typing import Any, NamedTuple, cast

from simulator.request import SimRequest
from simulator.text import OBFUSCATION_ALPHABET, Writer, tokenize

# Pause hints, turned into delays by simulator.pacing.
NOW = 0  # right after the previous event
TOKEN = 1  # one token interval (the first one waits for the first-token latency)
WORK = 2  # hosted-tool work: ``amount`` milliseconds
HIDDEN = 3  # ``amount`` tokens of hidden reasoning, as one pause
START = 4  # response.created: part of the first-token latency
QUEUE = 5  # background: time spent queued


class Step(NamedTuple):
    event: dict[str, Any]
    pause: int = NOW
    amount: float = 0.0
    # The event's SSE frame (Responses framing) when the builder wrote it with the event, else b"".
    frame: bytes = b""


# How the compact JSON encoder (ensure_ascii=False) writes a string: the C function when there is one.
_QUOTE = json.encoder.encode_basestring
# Tokens as the encoder writes them (quoted, UTF-8), shared by every stream: most tokens are words of the
# prose writer's few lists. Emptied when it holds this many (prompt words are unbounded).
_QUOTED_TOKENS: dict[str, bytes] = {}
_QUOTED_TOKENS_MAX = 8192
TEXT_DELTA = "response.output_text.delta"
# The event of a plain text delta for a consumer that reads only its frame and its type (the server's streams:
# ResponseBuilder.delta_events off): one shared, read-only stand-in instead of a dict per token.
TEXT_DELTA_STANDIN: Mapping[str, Any] = MappingProxyType({"type": TEXT_DELTA})


def text_delta_template(item_id: str, output_index: int, content_index: int, obfuscation: bool) -> bytes:
    """The SSE frame of a plain text delta (no logprobs), its ``sequence_number`` (``%d``), quoted
    ``delta`` and quoted ``obfuscation`` (``%s``, UTF-8) left to fill in: the bytes the JSON encoder
    writes for the event (same keys in the same order, same escaping) at a fraction of its cost. Most
    events of a stream are text deltas; their frame is built once per content part and filled per token."""
    where = (
        f'"item_id":{_QUOTE(item_id)},"output_index":{int(output_index)},"content_index":{int(content_index)}'
    ).replace("%", "%%")
    closing = ',"obfuscation":%s}\n\n' if obfuscation else "}\n\n"
    return (
        'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":%d,'
        + where + ',"logprobs":[],"delta":%s' + closing
    ).encode()


@dataclass
class TextPart:
    """An ``output_text`` content part. ``annotations`` maps a token index to an annotation
    whose offsets are filled in when that token has been streamed."""

    tokens: Iterable[str]
    annotations: Mapping[int, dict[str, Any]] = field(default_factory=dict)
    logprobs: bool = False
    # Set to emit the whole text in ``output_text.done`` with no deltas (seen on the wire).
    whole: str | None = None


@dataclass
class RefusalPart:
    tokens: Iterable[str]


class ResponseBuilder:
    def __init__(
        self,
        request: SimRequest,
        *,
        rng: random.Random,
        id_rng: random.Random,
        created_at: int,
        max_output_tokens: int | None = None,
        reasoning_echo: Mapping[str, Any] | None = None,
    ) -> None:
        self.request = request
        self.rng = rng
        self.writer = Writer(rng, request.prompt)
        self._id_rng = id_rng
        # Real ids of one response share a stem; it makes a stream easy to recognise.
        self._stem = f"{id_rng.getrandbits(96):024x}"
        self.response_id = self.new_id("resp")
        self.created_at = created_at
        self.seq = 0
        self.output: list[dict[str, Any]] = []
        self.budget = (
            max_output_tokens if max_output_tokens is not None else request.max_output_tokens
        )
        self.output_tokens = 0
        self.reasoning_tokens = 0
        self.exhausted = False
        self.obfuscate = request.include_obfuscation
        # Off: a plain text delta's event is TEXT_DELTA_STANDIN (its frame, written with it, is the whole event);
        # for consumers that read nothing of a text delta but its frame and type, and encode it with encode_sse.
        self.delta_events = True
        self._echo = self._echo_fields(reasoning_echo)
        self._input_tokens = (
            len(tokenize((request.instructions or "") + "\n" + request.input_text)) + 8
        )

    # ----- ids, events ---------------------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{self._stem}{self._id_rng.getrandbits(104):026x}"

    def call_id(self) -> str:
        return "call_" + "".join(self._id_rng.choice(OBFUSCATION_ALPHABET) for _ in range(24))

    def event(self, type_: str, pause: int = NOW, amount: float = 0.0, **fields: Any) -> Step:
        event = {"type": type_, "sequence_number": self.seq, **fields}
        self.seq += 1
        return Step(event, pause, amount)

    def _delta(self, type_: str, delta: str, fields: dict[str, Any]) -> Step:
        """A delta event: ``delta`` after the addressing fields, ``obfuscation`` last (as on the wire)."""
        obfuscation = fields.pop("obfuscation", None)
        event = {"type": type_, "sequence_number": self.seq, **fields, "delta": delta}
        if obfuscation is not None:
            event["obfuscation"] = obfuscation
        self.seq += 1
        return Step(event, TOKEN, 0.0)

    def next_output_index(self) -> int:
        return len(self.output)

    def finish_item(
        self, index: int, item: dict[str, Any], pause: int = NOW, amount: float = 0.0
    ) -> Step:
        self.output.append(item)
        return self.event("response.output_item.done", pause, amount, output_index=index, item=item)

    # ----- token budget --------------------------------------------------------------------
    def spend(self, count: int = 1, reasoning: bool = False) -> bool:
        """Count output tokens; False (and ``exhausted``) once ``max_output_tokens`` is used up."""
        if self.budget is not None and self.output_tokens + count > self.budget:
            spent = self.budget - self.output_tokens
            self.output_tokens = self.budget
            if reasoning:
                self.reasoning_tokens += spent
            self.exhausted = True
            return False
        self.output_tokens += count
        if reasoning:
            self.reasoning_tokens += count
        return True

    def stream_field(
        self,
        type_: str,
        tokens: Iterable[str],
        fields: Mapping[str, Any],
        *,
        obfuscate: bool = True,
        reasoning: bool = False,
    ) -> Iterator[Step]:
        """Deltas of one streamed string; returns (via ``yield from``) the accumulated text."""
        text = StringIO()
        for token in tokens:
            if self.exhausted or not self.spend(1, reasoning):
                break
            if obfuscate and self.obfuscate:
                yield self._delta(
                    type_, token, {**fields, "obfuscation": self.writer.obfuscation(len(token))}
                )
            else:
                yield self._delta(type_, token, dict(fields))
            text.write(token)
        return text.getvalue()

    # ----- the Response object -------------------------------------------------------------
    def _echo_fields(self, reasoning_echo: Mapping[str, Any] | None) -> dict[str, Any]:
        body = self.request.body
        text = {"format": {"type": "text"}, "verbosity": "medium"}
        if isinstance(body.get("text"), Mapping):
            text.update(body["text"])
        reasoning = {"effort": None, "summary": None}
        reasoning.update(reasoning_echo or {})
        if isinstance(body.get("reasoning"), Mapping):
            reasoning.update(body["reasoning"])
        max_output_tokens = self.budget if self.budget is not None else None
        return {
            "frequency_penalty": body.get("frequency_penalty", 0.0),
            "instructions": self.request.instructions,
            "max_output_tokens": max_output_tokens,
            "max_tool_calls": body.get("max_tool_calls"),
            "model": self.request.model,
            "parallel_tool_calls": self.request.parallel_tool_calls,
            "presence_penalty": body.get("presence_penalty", 0.0),
            "previous_response_id": body.get("previous_response_id"),
            "prompt_cache_key": body.get("prompt_cache_key"),
            "prompt_cache_retention": body.get("prompt_cache_retention"),
            "reasoning": reasoning,
            "safety_identifier": body.get("safety_identifier"),
            "service_tier": body.get("service_tier") or "auto",
            "store": body.get("store", True),
            "temperature": body.get("temperature", 1.0),
            "text": text,
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": [_normalise_tool(tool) for tool in self.request.tools],
            "top_logprobs": self.request.top_logprobs,
            "top_p": body.get("top_p", 1.0),
            "truncation": body.get("truncation") or "disabled",
        }

    def usage(self) -> dict[str, Any]:
        return {
            "input_tokens": self._input_tokens,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": self.output_tokens,
            "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
            "total_tokens": self._input_tokens + self.output_tokens,
        }

    def snapshot(self, status: str, **final: Any) -> dict[str, Any]:
        """The Response object as it stands; ``final`` sets output/usage/error/... at the end."""
        echo = copy_json(self._echo)
        terminal = status not in ("queued", "in_progress")
        if terminal and echo["service_tier"] == "auto":
            echo["service_tier"] = "default"
        response = {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "background": self.request.background,
            "completed_at": final.pop("completed_at", None),
            "error": final.pop("error", None),
            "incomplete_details": final.pop("incomplete_details", None),
            **echo,
            "output": final.pop("output", []),
            "usage": final.pop("usage", None),
            "user": self.request.body.get("user"),
            "metadata": copy_json(dict(self.request.metadata)),
        }
        response.update(final)
        return response

    # ----- lifecycle -----------------------------------------------------------------------
    def start(self) -> Iterator[Step]:
        if self.request.background:
            yield self.event("response.created", START, response=self.snapshot("queued"))
            yield self.event("response.queued", response=self.snapshot("queued"))
            yield self.event("response.in_progress", QUEUE, response=self.snapshot("in_progress"))
        else:
            yield self.event("response.created", START, response=self.snapshot("in_progress"))
            yield self.event("response.in_progress", response=self.snapshot("in_progress"))

    def finish(self) -> Iterator[Step]:
        """``response.completed``, or ``response.incomplete`` when the budget ran out."""
        output = copy_json(self.output)
        if self.exhausted:
            yield self.event(
                "response.incomplete",
                response=self.snapshot(
                    "incomplete",
                    incomplete_details={"reason": "max_output_tokens"},
                    output=output,
                    usage=self.usage(),
                ),
            )
            return
        duration = max(1, round(self.output_tokens / 60))
        yield self.event(
            "response.completed",
            response=self.snapshot(
                "completed",
                completed_at=self.created_at + duration,
                output=output,
                usage=self.usage(),
            ),
        )

    def fail(self, code: str, message: str, error_type: str | None = None) -> Iterator[Step]:
        """The real API's failure: a nested ``error`` event, then ``response.failed``."""
        yield self.event(
            "error",
            TOKEN,
            error={"type": error_type or code, "code": code, "message": message, "param": None},
        )
        yield self.event(
            "response.failed",
            response=self.snapshot("failed", error={"code": code, "message": message}),
        )

    # ----- common output items -------------------------------------------------------------
    def message(self, parts: Sequence[TextPart | RefusalPart]) -> Iterator[Step]:
        if self.exhausted:
            return
        index = self.next_output_index()
        item_id = self.new_id("msg")
        added = {
            "id": item_id,
            "type": "message",
            "status": "in_progress",
            "content": [],
            "role": "assistant",
        }
        yield self.event("response.output_item.added", output_index=index, item=added)
        content: list[dict[str, Any]] = []
        for content_index, part in enumerate(parts):
            if self.exhausted:
                break
            where = {"item_id": item_id, "output_index": index, "content_index": content_index}
            if isinstance(part, RefusalPart):
                done = yield from self._refusal_part(where, part)
            else:
                done = yield from self._text_part(where, part)
            content.append(done)
        status = "incomplete" if self.exhausted else "completed"
        item = {
            "id": item_id,
            "type": "message",
            "status": status,
            "content": content,
            "role": "assistant",
        }
        yield self.finish_item(index, item)

    def _text_part(self, where: dict[str, Any], part: TextPart) -> Iterator[Step]:
        empty = {"type": "output_text", "annotations": [], "logprobs": [], "text": ""}
        yield self.event("response.content_part.added", **where, part=empty)
        text = StringIO()
        offset = 0
        sentence_start = 0
        annotations: list[dict[str, Any]] = []
        logprobs: list[dict[str, Any]] = []
        if part.whole is not None:
            text.write(part.whole)
        item_id, output_index, content_index = where["item_id"], where["output_index"], where["content_index"]
        streamed: Iterable[str] = part.tokens if part.whole is None else ()
        if part.whole is None and not part.logprobs and not part.annotations and self.obfuscate:
            # The usual part (every token of sim-text): a loop of its own with nothing per token but the delta.
            text.write((yield from self._plain_deltas(item_id, output_index, content_index, part.tokens)))
            streamed = ()
        frame_template = None
        if not part.logprobs:
            frame_template = text_delta_template(item_id, output_index, content_index, self.obfuscate)
        quote = _QUOTE
        for position, token in enumerate(streamed):
            if not self.spend():
                break
            seq = self.seq
            # What _delta builds, written out, with its frame: this runs once per token of every text.
            if frame_template is not None:
                event = {"type": "response.output_text.delta", "sequence_number": seq, "item_id": item_id,
                         "output_index": output_index, "content_index": content_index, "logprobs": [], "delta": token}
                if self.obfuscate:
                    obfuscation = event["obfuscation"] = self.writer.obfuscation(len(token))
                    frame = frame_template % (seq, quote(token).encode(), quote(obfuscation).encode())
                else:
                    frame = frame_template % (seq, quote(token).encode())
                step = Step(event, TOKEN, 0.0, frame)
            else:
                token_logprobs = [self.logprob_entry(token)]
                logprobs.extend(token_logprobs)
                event = {"type": "response.output_text.delta", "sequence_number": seq, **where,
                         "logprobs": token_logprobs, "delta": token}
                if self.obfuscate:
                    event["obfuscation"] = self.writer.obfuscation(len(token))
                step = Step(event, TOKEN, 0.0)
            self.seq = seq + 1
            yield step
            text.write(token)
            offset += len(token)
            annotation_template = part.annotations.get(position)
            if annotation_template is not None:
                annotation = _place_annotation(annotation_template, sentence_start, offset)
                yield self.event(
                    "response.output_text.annotation.added",
                    **where,
                    annotation_index=len(annotations),
                    annotation=annotation,
                )
                annotations.append(annotation)
            if token in (".", "?", "!"):
                sentence_start = offset + 1
        full = text.getvalue()
        yield self.event("response.output_text.done", **where, text=full, logprobs=logprobs)
        done = {"type": "output_text", "annotations": annotations, "logprobs": [], "text": full}
        yield self.event("response.content_part.done", **where, part=done)
        return {**done, "annotations": list(annotations), "logprobs": logprobs}

    def _plain_deltas(
        self, item_id: str, output_index: int, content_index: int, tokens: Iterable[str]
    ) -> Iterator[Step]:
        """The deltas of a plain text part (no logprobs, annotations or whole text; obfuscated), as the loop
        of ``_text_part`` yields them (same events, frames, budget and random draws: tested), with only the
        delta's own work per token; returns the part's text. This runs once per token of every text, the
        bulk of a stream."""
        template = text_delta_template(item_id, output_index, content_index, obfuscation=True)
        # The obfuscation is letters and digits: its quotes go in the template, the pool's bytes between them.
        template = template.replace(b',"obfuscation":%s}', b',"obfuscation":"%s"}')
        writer = self.writer
        draw = writer.rng.random
        pool = writer.obfuscation_pool
        pool_bytes = pool.encode()
        span = len(pool) - 16
        quoted_tokens = _QUOTED_TOKENS
        if len(quoted_tokens) > _QUOTED_TOKENS_MAX:
            quoted_tokens.clear()
        budget = self.budget
        make_step = tuple.__new__
        standin = None if self.delta_events else cast(dict[str, Any], TEXT_DELTA_STANDIN)
        written = []
        for token in tokens:
            if budget is None:
                self.output_tokens += 1
            elif not self.spend():
                break
            size = 16 - len(token) % 16  # as Writer.obfuscation
            start = int(draw() * span)
            end = start + size
            seq = self.seq
            event = standin or {"type": TEXT_DELTA, "sequence_number": seq, "item_id": item_id,
                                "output_index": output_index, "content_index": content_index, "logprobs": [],
                                "delta": token, "obfuscation": pool[start:end]}
            quoted = quoted_tokens.get(token)
            if quoted is None:
                quoted = quoted_tokens[token] = _QUOTE(token).encode()
            self.seq = seq + 1
            yield make_step(Step, (event, TOKEN, 0.0, template % (seq, quoted, pool_bytes[start:end])))
            written.append(token)
        return "".join(written)

    def _refusal_part(self, where: dict[str, Any], part: RefusalPart) -> Iterator[Step]:
        yield self.event(
            "response.content_part.added", **where, part={"type": "refusal", "refusal": ""}
        )
        refusal = yield from self.stream_field(
            "response.refusal.delta", part.tokens, where, obfuscate=False
        )
        yield self.event("response.refusal.done", **where, refusal=refusal)
        done = {"type": "refusal", "refusal": refusal}
        yield self.event("response.content_part.done", **where, part=done)
        return dict(done)

    def logprob_entry(self, token: str) -> dict[str, Any]:
        top = []
        for _ in range(self.request.top_logprobs):
            alternative = self.rng.choice((" the", " a", " it", " this", ",", ".", " and", " of"))
            top.append(
                {
                    "bytes": list(alternative.encode()),
                    "logprob": round(-2 - self.rng.random() * 8, 6),
                    "token": alternative,
                }
            )
        return {
            "bytes": list(token.encode()),
            "logprob": self.writer.logprob(),
            "token": token,
            "top_logprobs": top,
        }


def copy_json(value: Any) -> Any:
    """A copy of JSON-shaped data (dicts and lists of strings, numbers, booleans and None) that shares
    nothing mutable with it: what ``copy.deepcopy`` gives such data, several times faster (it keeps no
    memo). Each Response object a stream sends is copied so (four or more per request)."""
    kind = type(value)
    if kind is dict:
        return {key: copy_json(item) for key, item in value.items()}
    if kind is list:
        return [copy_json(item) for item in value]
    if kind in (str, int, float, bool) or value is None:
        return value
    return copy.deepcopy(value)


def _place_annotation(
    template: Mapping[str, Any], sentence_start: int, offset: int
) -> dict[str, Any]:
    annotation = dict(template)
    if annotation.get("type") == "url_citation":
        annotation["start_index"] = min(sentence_start, offset)
        annotation["end_index"] = offset
    elif "index" in annotation or annotation.get("type") in ("file_citation", "file_path"):
        annotation["index"] = offset
    return annotation


def _normalise_tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    """Echo a tool the way the API does: function tools gain their defaults."""
    echoed = copy.deepcopy(dict(tool))
    if echoed.get("type") == "function":
        echoed.setdefault("description", None)
        echoed.setdefault("parameters", None)
        echoed.setdefault("strict", True)
    return echoed
