"""The body of each scenario: which output items a response streams, between its lifecycle
events. A script returns True when it ended the response itself (``response.failed``)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from simulator import hosted, items
from simulator.builders import RefusalPart, ResponseBuilder, Step, TextPart
from simulator.text import excerpt, tokenize

CITIES = ("Paris", "Lisbon", "Nairobi", "Osaka", "Montreal", "Lima", "Oslo", "Hanoi")
TIMEZONES = ("Europe/Paris", "Africa/Nairobi", "Asia/Tokyo", "America/Lima")
DEFAULT_FUNCTIONS: list[tuple[str, dict[str, Any]]] = [
    (
        "get_weather",
        {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
        },
    ),
    ("get_local_time", {"type": "object", "properties": {"timezone": {"type": "string"}}}),
    (
        "search_notes",
        {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
        },
    ),
]
SERVER_ERROR = (
    "server_error",
    "The server had an error while processing your request. Sorry about that!",
)
QUOTA_ERROR = (
    "insufficient_quota",
    (
        "You exceeded your current quota, please check your plan and billing details. For more "
        "information on this error, read the docs: "
        "https://platform.openai.com/docs/guides/error-codes/api-errors."
    ),
)
SUMMARY_TITLES = (
    "Understanding the request",
    "Planning the answer",
    "Checking the details",
    "Writing it down",
)


def text(b: ResponseBuilder, n: int) -> Iterator[Step]:
    yield from b.message([TextPart(b.writer.tokens(n))])


def text_multipart(b: ResponseBuilder, n: int) -> Iterator[Step]:
    share = max(1, n // 3)
    sizes = [share, share, max(1, n - 2 * share)]
    yield from b.message(
        [TextPart(b.writer.tokens(size, opening=i == 0)) for i, size in enumerate(sizes)]
    )


def logprobs(b: ResponseBuilder, n: int) -> Iterator[Step]:
    yield from b.message([TextPart(b.writer.tokens(n), logprobs=True)])


def refusal(b: ResponseBuilder, n: int) -> Iterator[Step]:
    topic = excerpt(b.request.prompt, 8) or "this"
    words = f"I'm sorry, but I can't help with \"{topic}\". The simulator refuses this request on purpose."
    yield from b.message([RefusalPart(tokenize(words))])


def function_calls(b: ResponseBuilder, n: int) -> Iterator[Step]:
    for name, arguments in planned_function_calls(b):
        yield from items.function_call(b, name, arguments)


def planned_function_calls(b: ResponseBuilder) -> list[tuple[str, str]]:
    """Calls for the request's function tools (or three built-in ones), in parallel if allowed."""
    tools = b.request.tools_of_type("function")
    specs = [
        (str(t.get("name") or "tool"), t.get("parameters") or {}) for t in tools
    ] or DEFAULT_FUNCTIONS
    count = max(len(specs), 3) if b.request.parallel_tool_calls else 1
    calls = []
    for number in range(min(count, 3)):
        name, schema = specs[number % len(specs)]
        calls.append((name, json.dumps(arguments_for(b, schema))))
    return calls


def arguments_for(b: ResponseBuilder, schema: Mapping[str, Any]) -> dict[str, Any]:
    """Plausible arguments for a JSON schema's top-level properties."""
    properties = schema.get("properties") if isinstance(schema, Mapping) else None
    if not isinstance(properties, Mapping):
        return {}
    rng, arguments = b.rng, {}
    for name, spec in properties.items():
        spec = spec if isinstance(spec, Mapping) else {}
        kind, lower = spec.get("type", "string"), name.lower()
        if isinstance(spec.get("enum"), list) and spec["enum"]:
            value: Any = rng.choice(spec["enum"])
        elif kind == "integer":
            value = rng.randint(1, 10)
        elif kind == "number":
            value = round(rng.uniform(0, 100), 1)
        elif kind == "boolean":
            value = rng.random() < 0.5
        elif kind == "array":
            value = [b.writer.topic()]
        elif kind == "object":
            value = {}
        elif lower in ("city", "location", "place"):
            value = rng.choice(CITIES)
        elif "timezone" in lower or lower == "tz":
            value = rng.choice(TIMEZONES)
        else:
            value = excerpt(b.request.prompt, 8) or b.writer.topic()
        arguments[name] = value
    return arguments


def custom_tool(b: ResponseBuilder, n: int) -> Iterator[Step]:
    tool = next(iter(b.request.tools_of_type("custom")), {})
    topic = b.writer.topic().replace("'", "")
    query = (
        f"SELECT title, score\nFROM notes\nWHERE topic = '{topic}'\nORDER BY score DESC\nLIMIT 5;"
    )
    yield from items.custom_tool_call(b, str(tool.get("name") or "run_sql"), query)


def _summary_parts(b: ResponseBuilder, count: int) -> list[list[str]]:
    return [
        tokenize(f"**{SUMMARY_TITLES[i % len(SUMMARY_TITLES)]}**\n\n{b.writer.sentences(2)}")
        for i in range(count)
    ]


def reasoning_summary(b: ResponseBuilder, n: int) -> Iterator[Step]:
    yield from items.reasoning(
        b, hidden_tokens=b.rng.randint(64, 192), summary=_summary_parts(b, 3)
    )
    yield from text(b, n)


def reasoning_text(b: ResponseBuilder, n: int) -> Iterator[Step]:
    thought = (
        f"The user asks about {b.writer.topic()}. {b.writer.sentences(3)} Let me answer plainly."
    )
    yield from items.reasoning(b, text=[tokenize(thought)])
    yield from text(b, n)


def _cited_message(
    b: ResponseBuilder, n: int, annotations: list[dict[str, Any]], logprobs: bool = False
) -> TextPart:
    """A text part with ``annotations`` attached at the ends of the first sentences."""
    tokens = list(b.writer.tokens(n))
    ends = [i - 1 for i, token in enumerate(tokens) if token in (".", "?", "!") and i > 0]
    placed = dict(zip(ends, annotations))
    return TextPart(tokens, annotations=placed, logprobs=logprobs)


def _url_citations(query: str) -> list[dict[str, Any]]:
    return [
        {"type": "url_citation", "end_index": 0, "start_index": 0, "title": title, "url": url}
        for url, title in hosted.search_results(query)
    ]


def web_search(b: ResponseBuilder, n: int) -> Iterator[Step]:
    query = excerpt(b.request.prompt, 10) or "simulated search"
    yield from items.reasoning(b, hidden_tokens=96)
    yield from hosted.web_search(b, query)
    yield from items.reasoning(b, hidden_tokens=48)
    yield from b.message([_cited_message(b, n, _url_citations(query))])


def _file_citation(b: ResponseBuilder) -> dict[str, Any]:
    file_id, filename = hosted.search_file(b)
    return {"type": "file_citation", "file_id": file_id, "filename": filename, "index": 0}


def file_search(b: ResponseBuilder, n: int) -> Iterator[Step]:
    yield from hosted.file_search(b, b.request.prompt or "simulated question")
    yield from b.message([_cited_message(b, n, [_file_citation(b), _file_citation(b)])])


def _code(b: ResponseBuilder) -> tuple[str, str]:
    quoted = excerpt(b.request.prompt, 12) or "streaming responses one event at a time"
    words = quoted.split()
    code = (
        f"text = {json.dumps(quoted)}\nwords = text.split()\nprint(len(words), 'words')\n"
        "print(sorted(words, key=len)[-3:])\n"
    )
    return code, f"{len(words)} words\n{sorted(words, key=len)[-3:]}\n"


def code_interpreter(b: ResponseBuilder, n: int) -> Iterator[Step]:
    yield from hosted.code_interpreter(b, *_code(b))
    yield from text(b, n)


def image_generation(b: ResponseBuilder, n: int) -> Iterator[Step]:
    yield from hosted.image_generation(b, b.request.prompt)
    # The real API often closes with a message whose text is empty and has no deltas.
    yield from b.message([TextPart((), whole="")])


def _mcp_label(b: ResponseBuilder) -> str:
    tool = next(iter(b.request.tools_of_type("mcp")), {})
    return str(tool.get("server_label") or "simdocs")


def mcp(b: ResponseBuilder, n: int) -> Iterator[Step]:
    label = _mcp_label(b)
    query = excerpt(b.request.prompt, 6) or b.writer.topic()
    yield from hosted.mcp_list_tools(b, label)
    yield from hosted.mcp_list_tools(b, "flaky-server", fail=True)
    yield from hosted.mcp_call(
        b,
        label,
        "search_docs",
        {"query": query},
        f"Found 2 pages about {query}: /guides/streaming, /guides/timing",
    )
    yield from hosted.mcp_call(b, label, "fetch_page", {"path": "/guides/streaming"}, None)
    yield from text(b, n)


def _commands(b: ResponseBuilder) -> list[tuple[str, str, str, int]]:
    topic = b.writer.topic().split()[0].replace("'", "")
    count = b.rng.randint(2, 9)
    return [
        ("ls", "notes.md\nreport.txt\n", "", 0),
        (f"grep -ci '{topic}' notes.md", f"{count}\n", "", 0),
        ("cat missing.txt", "", "cat: missing.txt: No such file or directory\n", 1),
    ]


def shell(b: ResponseBuilder, n: int) -> Iterator[Step]:
    yield from hosted.shell(b, _commands(b))
    yield from text(b, n)


def compaction(b: ResponseBuilder, n: int) -> Iterator[Step]:
    yield from hosted.compaction(b)
    yield from text(b, n)


def audio(b: ResponseBuilder, n: int) -> Iterator[Step]:
    spoken = yield from items.audio(b, list(b.writer.tokens(n)))
    yield from b.message([TextPart((), whole=spoken or "")])


def _diff(b: ResponseBuilder) -> str:
    return (
        "@@ -1,3 +1,4 @@\n # Notes\n-Streaming is hard.\n"
        f"+Streaming is {b.writer.topic()}, one event at a time.\n+{b.writer.sentence()}\n Keep it simple.\n"
    )


def apply_patch(b: ResponseBuilder, n: int) -> Iterator[Step]:
    yield from items.apply_patch(b, "notes.md", _diff(b))
    yield from text(b, n)


def all_families(b: ResponseBuilder, n: int) -> Iterator[Step]:
    """Every item type and event family the simulator knows, in one response."""
    label = _mcp_label(b)
    query = excerpt(b.request.prompt, 10) or "simulated search"
    yield from hosted.compaction(b)
    yield from items.reasoning(b, hidden_tokens=32, summary=_summary_parts(b, 2))
    yield from items.reasoning(b, text=[tokenize(b.writer.sentences(2))])
    yield from hosted.web_search(b, query)
    yield from hosted.file_search(b, query)
    yield from hosted.code_interpreter(b, *_code(b))
    yield from hosted.image_generation(b, b.request.prompt)
    yield from hosted.mcp_list_tools(b, label)
    yield from hosted.mcp_list_tools(b, "flaky-server", fail=True)
    yield from hosted.mcp_call(
        b, label, "search_docs", {"query": query}, "Found 1 page: /guides/streaming"
    )
    yield from hosted.mcp_call(b, label, "fetch_page", {"path": "/guides/streaming"}, None)
    yield from hosted.shell(b, _commands(b)[:2])
    yield from items.apply_patch(b, "notes.md", _diff(b))
    yield from custom_tool(b, n)
    for name, arguments in planned_function_calls(b)[:2]:
        yield from items.function_call(b, name, arguments)
    yield from items.audio(b, list(b.writer.tokens(8, opening=False)))
    cited = _cited_message(b, n, [*_url_citations(query)[:1], _file_citation(b)], logprobs=True)
    second = TextPart(b.writer.tokens(max(4, n // 4), opening=False))
    yield from b.message(
        [cited, second, RefusalPart(tokenize(" I won't share the hidden notes, though."))]
    )


def incomplete(b: ResponseBuilder, n: int) -> Iterator[Step]:
    yield from items.reasoning(b, hidden_tokens=32)
    yield from text(b, n)


def failed(b: ResponseBuilder, n: int) -> Iterator[Step]:
    """Text starts, then the server fails mid-message: nested ``error`` + ``response.failed``."""
    index, item_id = b.next_output_index(), b.new_id("msg")
    yield b.event(
        "response.output_item.added",
        output_index=index,
        item={
            "id": item_id,
            "type": "message",
            "status": "in_progress",
            "content": [],
            "role": "assistant",
        },
    )
    where = {"item_id": item_id, "output_index": index, "content_index": 0}
    yield b.event(
        "response.content_part.added",
        **where,
        part={"type": "output_text", "annotations": [], "logprobs": [], "text": ""},
    )
    yield from b.stream_field(
        "response.output_text.delta", b.writer.tokens(max(1, n // 3)), {**where, "logprobs": []}
    )
    yield from b.fail(*SERVER_ERROR)
    return True


def quota_exceeded(b: ResponseBuilder, n: int) -> Iterator[Step]:
    """Like the real recording: nothing streamed, then ``insufficient_quota``."""
    yield from b.fail(*QUOTA_ERROR)
    return True
