"""Hosted-tool output items: web and file search, code interpreter, image generation, MCP,
hosted shell and compaction.

Each function streams one item through a
:class:`~simulator.builders.ResponseBuilder`; ``WORK`` pauses stand for the tool's
own processing time.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

from simulator.builders import NOW, TOKEN, WORK, ResponseBuilder, Step
from simulator.images import progressive_pngs
from simulator.text import excerpt, json_tokens, tokenize


def _work(b: ResponseBuilder, low: float, high: float) -> float:
    return round(b.rng.uniform(low, high), 1)


def web_search(b: ResponseBuilder, query: str) -> Iterator[Step]:
    if b.exhausted:
        return
    index, item_id = b.next_output_index(), b.new_id("ws")
    where = {"output_index": index, "item_id": item_id}
    yield b.event(
        "response.output_item.added",
        output_index=index,
        item={"id": item_id, "type": "web_search_call", "status": "in_progress"},
    )
    yield b.event("response.web_search_call.in_progress", **where)
    yield b.event("response.web_search_call.searching", **where)
    yield b.event("response.web_search_call.completed", WORK, _work(b, 700, 1600), **where)
    sources = [{"type": "url", "url": url} for url, _ in search_results(query)]
    yield b.finish_item(
        index,
        {
            "id": item_id,
            "type": "web_search_call",
            "status": "completed",
            "action": {"type": "search", "query": query, "sources": sources},
        },
    )


def search_results(query: str) -> list[tuple[str, str]]:
    """(url, title) pairs on reserved example domains, derived from the query."""
    slug = "-".join(query.lower().split()[:5]) or "answer"
    slug = "".join(ch for ch in slug if ch.isalnum() or ch == "-")[:60] or "answer"
    return [
        (f"https://example.com/guides/{slug}?utm_source=openai", f"A guide to {excerpt(query, 6)}"),
        (f"https://example.org/notes/{slug}?utm_source=openai", f"Notes on {excerpt(query, 6)}"),
    ]


def file_search(b: ResponseBuilder, query: str) -> Iterator[Step]:
    if b.exhausted:
        return
    index, item_id = b.next_output_index(), b.new_id("fs")
    where = {"output_index": index, "item_id": item_id}
    yield b.event(
        "response.output_item.added",
        output_index=index,
        item={
            "id": item_id,
            "type": "file_search_call",
            "status": "in_progress",
            "queries": [],
            "results": None,
        },
    )
    yield b.event("response.file_search_call.in_progress", **where)
    yield b.event("response.file_search_call.searching", **where)
    yield b.event("response.file_search_call.completed", WORK, _work(b, 300, 800), **where)
    results = None
    if "file_search_call.results" in b.request.include:
        file_id, filename = search_file(b)
        results = [
            {
                "attributes": {},
                "file_id": file_id,
                "filename": filename,
                "score": 0.87,
                "text": b.writer.sentences(2),
            }
        ]
    yield b.finish_item(
        index,
        {
            "id": item_id,
            "type": "file_search_call",
            "status": "completed",
            "queries": [query],
            "results": results,
        },
    )


def search_file(b: ResponseBuilder) -> tuple[str, str]:
    return "file-" + b.response_id[-22:], "simulated-notes.md"


def code_interpreter(b: ResponseBuilder, code: str, logs: str) -> Iterator[Step]:
    if b.exhausted:
        return
    index, item_id = b.next_output_index(), b.new_id("ci")
    where = {"output_index": index, "item_id": item_id}
    container = "cntr_" + b.response_id[5:37]
    added = {
        "id": item_id,
        "type": "code_interpreter_call",
        "status": "in_progress",
        "code": "",
        "container_id": container,
        "outputs": None,
    }
    yield b.event("response.output_item.added", output_index=index, item=added)
    yield b.event("response.code_interpreter_call.in_progress", **where)
    streamed = yield from b.stream_field(
        "response.code_interpreter_call_code.delta", tokenize(code), where
    )
    yield b.event("response.code_interpreter_call_code.done", **where, code=streamed)
    yield b.event("response.code_interpreter_call.interpreting", **where)
    yield b.event("response.code_interpreter_call.completed", WORK, _work(b, 500, 1200), **where)
    outputs = (
        [{"type": "logs", "logs": logs}]
        if "code_interpreter_call.outputs" in b.request.include
        else None
    )
    status = "incomplete" if b.exhausted else "completed"
    yield b.finish_item(index, {**added, "status": status, "code": streamed, "outputs": outputs})


def image_generation(b: ResponseBuilder, prompt: str) -> Iterator[Step]:
    if b.exhausted:
        return
    tool = next(iter(b.request.tools_of_type("image_generation")), {})
    partials = tool.get("partial_images", 2)
    partials = partials if isinstance(partials, int) and 0 <= partials <= 3 else 2
    options = {
        "background": tool.get("background", "opaque"),
        "output_format": tool.get("output_format", "png"),
        "quality": tool.get("quality", "low"),
        "size": tool.get("size", "1024x1024"),
    }
    index, item_id = b.next_output_index(), b.new_id("ig")
    where = {"output_index": index, "item_id": item_id}
    yield b.event(
        "response.output_item.added",
        output_index=index,
        item={
            "id": item_id,
            "type": "image_generation_call",
            "status": "in_progress",
            "result": None,
        },
    )
    yield b.event("response.image_generation_call.in_progress", **where)
    yield b.event("response.image_generation_call.generating", **where)
    partial_images, final = progressive_pngs(b.response_id + prompt, partials)
    for number, image in enumerate(partial_images):
        yield b.event(
            "response.image_generation_call.partial_image",
            WORK,
            _work(b, 600, 1200),
            **where,
            partial_image_b64=image,
            partial_image_index=number,
            **options,
        )
    yield b.event("response.image_generation_call.completed", WORK, _work(b, 500, 1000), **where)
    yield b.finish_item(
        index,
        {
            "id": item_id,
            "type": "image_generation_call",
            "status": "completed",
            "action": "generate",
            "result": final,
            "revised_prompt": f"A calm landscape at sunset, inspired by: {excerpt(prompt, 10)}",
            **options,
        },
    )


def mcp_list_tools(b: ResponseBuilder, server_label: str, fail: bool = False) -> Iterator[Step]:
    if b.exhausted:
        return
    index, item_id = b.next_output_index(), b.new_id("mcpl")
    where = {"output_index": index, "item_id": item_id}
    added = {"id": item_id, "type": "mcp_list_tools", "server_label": server_label, "tools": []}
    yield b.event("response.output_item.added", output_index=index, item=added)
    yield b.event("response.mcp_list_tools.in_progress", **where)
    if fail:
        yield b.event("response.mcp_list_tools.failed", WORK, _work(b, 300, 700), **where)
        error = (f"Error retrieving tool list from MCP server: '{server_label}'."
                 " Http status code: 503 (Service Unavailable)")
        yield b.finish_item(index, {**added, "error": error})
        return
    yield b.event("response.mcp_list_tools.completed", WORK, _work(b, 200, 600), **where)
    yield b.finish_item(index, {**added, "tools": MCP_TOOLS, "error": None})


MCP_TOOLS = [
    {
        "name": "search_docs",
        "description": "Search the documentation.",
        "annotations": {"read_only": True},
        "input_schema": {
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
    },
    {
        "name": "fetch_page",
        "description": "Fetch one documentation page.",
        "annotations": {"read_only": True},
        "input_schema": {
            "type": "object",
            "properties": {"path": {"type": "string"}},
            "required": ["path"],
        },
    },
]


def mcp_call(
    b: ResponseBuilder, server_label: str, name: str, arguments: dict[str, Any], output: str | None
) -> Iterator[Step]:
    """One MCP call; ``output=None`` makes it fail with ``response.mcp_call.failed``."""
    if b.exhausted:
        return
    index, item_id = b.next_output_index(), b.new_id("mcp")
    where = {"output_index": index, "item_id": item_id}
    added = {
        "id": item_id,
        "type": "mcp_call",
        "status": "in_progress",
        "approval_request_id": None,
        "arguments": "",
        "error": None,
        "name": name,
        "output": None,
        "server_label": server_label,
    }
    yield b.event("response.output_item.added", output_index=index, item=added)
    yield b.event("response.mcp_call.in_progress", **where)
    text = json.dumps(arguments, separators=(",", ":"))
    streamed = yield from b.stream_field(
        "response.mcp_call_arguments.delta", json_tokens(text), where
    )
    yield b.event("response.mcp_call_arguments.done", **where, arguments=streamed)
    if output is None:
        yield b.event("response.mcp_call.failed", WORK, _work(b, 300, 900), **where)
        error = {
            "type": "http_error",
            "code": 502,
            "message": "The MCP server answered 502 Bad Gateway.",
        }
        yield b.finish_item(
            index, {**added, "status": "failed", "arguments": streamed, "error": error}
        )
        return
    yield b.event("response.mcp_call.completed", WORK, _work(b, 300, 900), **where)
    yield b.finish_item(
        index, {**added, "status": "completed", "arguments": streamed, "output": output}
    )


def shell(b: ResponseBuilder, commands: list[tuple[str, str, str, int]]) -> Iterator[Step]:
    """A ``shell_call`` (commands streamed) then its ``shell_call_output`` item.

    ``commands`` holds (command, stdout, stderr, exit_code) tuples.
    """
    if b.exhausted:
        return
    index, item_id, call_id = b.next_output_index(), b.new_id("sh"), b.call_id()
    action = {"commands": [], "max_output_length": None, "timeout_ms": 60000}
    added = {
        "id": item_id,
        "type": "shell_call",
        "status": "in_progress",
        "call_id": call_id,
        "action": action,
        "environment": None,
    }
    yield b.event("response.output_item.added", output_index=index, item=added)
    written = []
    for command_index, (command, *_rest) in enumerate(commands):
        if b.exhausted:
            break
        where = {"command_index": command_index, "output_index": index}
        yield b.event("response.shell_call_command.added", **where, command="")
        text = yield from b.stream_field(
            "response.shell_call_command.delta", tokenize(command), where
        )
        yield b.event("response.shell_call_command.done", **where, command=text)
        written.append(text)
    status = "incomplete" if b.exhausted else "completed"
    yield b.finish_item(
        index, {**added, "status": status, "action": {**action, "commands": written}}
    )
    if b.exhausted:
        return
    out_index, out_id = b.next_output_index(), b.new_id("sho")
    out_added = {
        "id": out_id,
        "type": "shell_call_output",
        "status": "in_progress",
        "call_id": call_id,
        "output": [],
        "max_output_length": None,
    }
    yield b.event("response.output_item.added", output_index=out_index, item=out_added)
    outputs = []
    for command_index, (_command, stdout, stderr, exit_code) in enumerate(commands):
        where = {"command_index": command_index, "item_id": out_id, "output_index": out_index}
        lines = stdout.splitlines(keepends=True) or [""]
        for number, line in enumerate(lines):
            yield b.event(
                "response.shell_call_output_content.delta",
                WORK if number == 0 else TOKEN,
                _work(b, 150, 500),
                **where,
                delta={"stdout": line},
            )
        if stderr:
            yield b.event(
                "response.shell_call_output_content.delta", TOKEN, **where, delta={"stderr": stderr}
            )
        result = {
            "stdout": stdout,
            "stderr": stderr,
            "outcome": {"type": "exit", "exit_code": exit_code},
        }
        yield b.event("response.shell_call_output_content.done", NOW, **where, output=[result])
        outputs.append(result)
    yield b.finish_item(out_index, {**out_added, "status": "completed", "output": outputs})


def compaction(b: ResponseBuilder) -> Iterator[Step]:
    if b.exhausted:
        return
    index, item_id = b.next_output_index(), b.new_id("cmp")
    added = {"id": item_id, "type": "compaction", "encrypted_content": ""}
    yield b.event("response.output_item.added", output_index=index, item=added)
    yield b.event("response.compaction.compacting", output_index=index, item_id=item_id)
    sealed = "gAAAAAB" + base64.urlsafe_b64encode(b.rng.randbytes(96)).decode()
    yield b.finish_item(index, {**added, "encrypted_content": sealed}, WORK, _work(b, 400, 900))
