"""Live moderation in the runner: flags stored and published while streaming, stop rules end the
run, flags reach websocket viewers, and the optional moderation model (the simulator's)."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from dashboard.routing import websocket_urlpatterns
from streams.live.executor import RunExecutor
from streams.models import ModerationResult, ModerationRule, ReviewState, Run, RunFlag, RunStatus
from streams.pipeline.broadcast import group_name, publish_flag
from streams.review import moderation_model
from streams.review.moderation import LiveModerator, fields_of, input_text
from tests.support.factories import make_run
from tests.support.upstreams import RESP, Script, sse, text_stream

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def upstream_settings():
    # No script here stalls on purpose: a stall is a bug, so fail in seconds, not the default minute.
    return {"STREAMSCOPE_STALL_TIMEOUT_S": 5}


@sync_to_async
def rule(name, patterns, kind="keywords", scope="output_text", action="flag", **extra):
    return ModerationRule.objects.create(name=name, patterns=patterns, kind=kind, scope=scope, action=action, **extra)


@sync_to_async
def new_run(user, provider="scripted", input_text="hi", background=False):
    return Run.objects.create(owner=user, provider=provider, model="m",
                              request={"model": "m", "input": input_text, "stream": True, "background": background},
                              background=background)


@sync_to_async
def flags_of(run):
    return list(RunFlag.objects.filter(run=run).order_by("id").values(
        "rule_name", "action", "scope", "seq", "matched_text", "start", "end", "context_before", "location"))


@sync_to_async
def reload(run):
    run.refresh_from_db()
    return run, list(run.events.order_by("seq").values_list("seq", "type"))


async def listen(run_id):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group_name(run_id), channel)
    return layer, channel


async def drain(layer, channel):
    messages = []
    while True:
        try:
            messages.append(await asyncio.wait_for(layer.receive(channel), timeout=0.2))
        except TimeoutError:
            return messages


# --- which text each event feeds ----------------------------------------------------------------

def test_fields_of_maps_deltas_to_scopes():
    assert fields_of("response.output_text.delta", {"output_index": 0, "content_index": 1, "delta": "hi"}) == [
        ("output_text", "text:0:1", "output 0 · part 1 · text", "hi")]
    assert fields_of("response.reasoning_summary_text.delta",
                     {"output_index": 2, "summary_index": 0, "delta": "x"})[0][0] == "reasoning"
    assert fields_of("response.function_call_arguments.delta",
                     {"output_index": 1, "delta": "{\""})[0][0] == "tool_arguments"
    assert fields_of("response.output_text.done", {"text": "whole"}) == []  # the deltas already counted
    chunk = {"object": "chat.completion.chunk", "choices": [
        {"index": 0, "delta": {"content": "a", "tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]}
    assert [f[0] for f in fields_of("chat.completion.chunk", chunk)] == ["output_text", "tool_arguments"]


def test_rules_only_see_their_scope():
    moderator = LiveModerator(run_id=0)
    moderator.configure([ModerationRule(pk=1, name="r", kind="keywords", patterns="secret", scope="reasoning")])
    moderator.observe(0, "response.output_text.delta", {"output_index": 0, "delta": "a secret "})
    assert moderator.pending == []
    moderator.observe(1, "response.reasoning_text.delta", {"output_index": 0, "delta": "a secret "})
    assert [h.match.seq for h in moderator.pending] == [1]


def test_input_rules_read_chat_messages_too():
    chat = Run(request={"model": "m", "messages": [{"role": "system", "content": "be brief"},
                                                   {"role": "user",
                                                    "content": [{"type": "text", "text": "my sk-abc"}]}]})
    assert input_text(chat) == "be brief\n\nmy sk-abc"
    assert input_text(Run(request={"input": "plain"})) == "plain"


def test_an_unusable_stored_rule_is_skipped_not_fatal():
    moderator = LiveModerator(run_id=0)
    moderator.configure([ModerationRule(pk=1, name="bad", kind="regex", patterns="(a+)+", scope="output_text"),
                         ModerationRule(pk=2, name="good", kind="keywords", patterns="ok", scope="output_text")])
    assert set(moderator.rules) == {2}


# --- in the runner ------------------------------------------------------------------------------

async def test_a_flag_rule_flags_the_run_live_at_the_event_where_it_first_matched(upstream, user):
    await rule("no fruit", "forbidden fruit")
    events = text_stream(["The ", "forb", "idden fr", "uit is ", "here."])
    body = sse(*events)
    upstream.scripts.append(Script(steps=[(0, body[: len(body) // 2]), (0.05, body[len(body) // 2 :])]))
    run = await new_run(user)
    layer, channel = await listen(run.pk)
    assert await RunExecutor(run.pk).execute() == RunStatus.COMPLETED
    (flag,) = await flags_of(run)
    # seqs: 0 created, 1 in_progress, 2.. deltas; "fr" + "uit" completes the match at delta 4 (seq 5).
    assert flag == {"rule_name": "no fruit", "action": "flag", "scope": "output_text", "seq": 5,
                    "matched_text": "forbidden fruit", "start": 4, "end": 19, "context_before": "The ",
                    "location": "output 0 · text"}
    run, _ = await reload(run)
    assert run.review_state == ReviewState.FLAGGED
    messages = await drain(layer, channel)
    flag_messages = [m for m in messages if m["type"] == "run.flag"]
    assert [m["flag"]["matched_text"] for m in flag_messages] == ["forbidden fruit"]
    # Published after the batch holding its event, before the final status.
    kinds = [m["type"] for m in messages]
    assert kinds.index("run.flag") < len(kinds) - 1 and kinds[-1] == "run.status"


async def test_a_stop_rule_cuts_the_stream_right_there(upstream, user):
    await rule("stopper", "detonate", action="stop")
    first = text_stream(["Step one: ", "deto", "nate", " the"], terminal=False)
    rest = text_stream([" rest"] * 5)[len(first):]
    # The rest would come a second later; the run must not wait for it.
    upstream.scripts.append(Script(steps=[(0, sse(*first)), (1.0, sse(*rest))]))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.CANCELLED
    run, rows = await reload(run)
    assert run.error["code"] == "moderation_stopped"
    assert "stopped by moderation rule “stopper”" in run.error["message"] and "event #4" in run.error["message"]
    assert rows[-1][0] <= 5 and "response.completed" not in [t for _, t in rows]
    (flag,) = await flags_of(run)
    assert (flag["action"], flag["seq"], flag["matched_text"]) == ("stop", 4, "detonate")


async def test_a_stop_rule_on_the_input_never_sends_the_request(upstream, user):
    await rule("no secrets in prompts", r"sk-[A-Za-z0-9]{8,}", kind="regex", scope="input", action="stop")
    run = await new_run(user, input_text="my key is sk-abcdefgh1234, summarise it")
    assert await RunExecutor(run.pk).execute() == RunStatus.CANCELLED
    assert upstream.requests == []
    run, rows = await reload(run)
    assert rows == [] and "the request was not sent" in run.error["message"]
    (flag,) = await flags_of(run)
    assert (flag["scope"], flag["seq"], flag["matched_text"]) == ("input", None, "sk-abcdefgh1234")


async def test_a_stop_rule_cancels_a_background_response_upstream(upstream, user):
    await rule("stopper", "halt", action="stop")
    upstream.scripts.append(Script(steps=[(0, sse(*text_stream(["please ", "halt", " now"], terminal=False)))],
                                   ending="hang"))
    upstream.scripts.append(Script(content_type="application/json", steps=[(0, b"{}")]))
    run = await new_run(user, provider="scripted-bg", background=True)
    assert await RunExecutor(run.pk).execute() == RunStatus.CANCELLED
    assert upstream.requests[-1]["method"] == "POST"
    assert upstream.requests[-1]["path"].endswith(f"/responses/{RESP['id']}/cancel")


async def test_disabled_rules_do_nothing(upstream, user):
    await rule("off", "here", enabled=False)
    upstream.scripts.append(Script(steps=[(0, sse(*text_stream(["here ", "it is"])))]))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.COMPLETED
    assert await flags_of(run) == []
    run, _ = await reload(run)
    assert run.review_state == ReviewState.UNREVIEWED


async def test_a_match_in_the_last_delta_is_flagged_when_the_stream_ends(upstream, user):
    await rule("last word", "goodbye")
    upstream.scripts.append(Script(steps=[(0, sse(*text_stream(["say ", "goodbye"])))]))
    run = await new_run(user)
    await RunExecutor(run.pk).execute()
    (flag,) = await flags_of(run)
    assert (flag["matched_text"], flag["seq"]) == ("goodbye", 3)


# --- viewers ------------------------------------------------------------------------------------

async def test_the_websocket_sends_stored_flags_on_connect_and_live_ones_after(user):
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=3)
    stored_rule = await rule("r1", "w1")
    await sync_to_async(RunFlag.objects.create)(run=run, rule=stored_rule, rule_name="r1", scope="output_text",
                                                seq=1, matched_text="w1", start=3, end=5)
    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/runs/{run.pk}/")
    comm.scope["user"] = user
    assert (await comm.connect())[0]
    try:
        frames = []
        while not any(f["type"] == "flag" for f in frames):
            frames.append(json.loads(await comm.receive_from(timeout=3)))
        assert frames[-1]["flag"]["matched_text"] == "w1" and frames[-1]["flag"]["seq"] == 1
        live = {"id": 99, "rule_name": "r2", "matched_text": "w2", "seq": 2}
        await publish_flag(run.pk, live)
        assert json.loads(await comm.receive_from(timeout=3)) == {"type": "flag", "flag": live}
    finally:
        await comm.disconnect()


# --- the optional moderation model ----------------------------------------------------------------

async def test_the_moderation_model_flags_and_stores_categories(sim_server, settings, user):
    settings.STREAMSCOPE_MODERATION_URL = sim_server
    run = await sync_to_async(make_run)(user, output_text="I will threaten to kill the process.")
    result = await moderation_model.moderate_run(run.pk)
    assert result.flagged and {"violence", "harassment/threatening"} <= set(result.flagged_categories)
    assert result.category_scores["violence"] > 0.5
    run, _ = await reload(run)
    assert run.review_state == ReviewState.FLAGGED
    (flag,) = await flags_of(run)
    assert flag["rule_name"].startswith("moderation model: ") and "violence" in flag["rule_name"]


async def test_a_clean_output_is_stored_unflagged(sim_server, settings, user):
    settings.STREAMSCOPE_MODERATION_URL = sim_server + "/moderations"
    run = await sync_to_async(make_run)(user, output_text="The sky is blue because of Rayleigh scattering.")
    result = await moderation_model.moderate_run(run.pk)
    assert result.flagged is False and result.error is None and result.categories["violence"] is False
    run, _ = await reload(run)
    assert run.review_state == ReviewState.UNREVIEWED


async def test_an_unreachable_moderation_endpoint_is_recorded_not_raised(settings, user):
    settings.STREAMSCOPE_MODERATION_URL = "http://127.0.0.1:9/v1"
    run = await sync_to_async(make_run)(user, output_text="anything")
    result = await moderation_model.moderate_run(run.pk)
    assert result.flagged is False and "could not be used" in result.error["message"]


async def test_a_finished_run_is_checked_by_the_model_when_configured(upstream, sim_server, settings, user):
    settings.STREAMSCOPE_MODERATION_URL = sim_server
    upstream.scripts.append(Script(steps=[(0, sse(*text_stream(["a bomb ", "in the text"])))]))
    run = await new_run(user)
    await RunExecutor(run.pk).execute()
    for _ in range(100):
        result = await ModerationResult.objects.filter(run_id=run.pk).afirst()
        if result is not None:
            break
        await asyncio.sleep(0.05)
    assert result is not None and result.flagged and "illicit" in result.flagged_categories


async def test_flags_that_fail_to_store_are_kept_for_the_next_commit(monkeypatch):
    from streams.review import moderation

    moderator = LiveModerator(run_id=0)
    moderator.configure([ModerationRule(pk=1, name="r", kind="keywords", patterns="secret", scope="output_text")])
    moderator.observe(0, "response.output_text.delta", {"output_index": 0, "delta": "a secret "})

    def down(run_id, hits):
        raise RuntimeError("database is gone")

    monkeypatch.setattr(moderation, "store_flags", down)
    with pytest.raises(RuntimeError):
        await moderator.commit()
    assert [h.match.seq for h in moderator.pending] == [0]  # not lost: the next commit stores it
