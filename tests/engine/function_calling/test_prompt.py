"""Tools, calls and results in the conversation a template sees (no engine)."""

from __future__ import annotations

import json

from deepinfra_serve.config.cards import DEFAULT_TOOL_PROMPT, ToolCalling
from deepinfra_serve.engine.function_calling.choice import AUTO, NONE, ToolChoice
from deepinfra_serve.engine.function_calling.prompt import as_text, conversation, for_mistral

PROMPT = ToolCalling(format="prompt")
TEMPLATE = ToolCalling(format="template", parser="mistral")
FN = {"name": "get_time", "description": "Clock.", "parameters": {"type": "object"}}
TOOL = {"type": "function", "function": FN}
CALLS = [
    {"id": "call_7", "type": "function", "function": {"name": "get_time", "arguments": '{"z":1}'}}
]


def test_tools_become_a_system_message_with_one_json_line_each() -> None:
    [system, user] = as_text([{"role": "user", "content": "hi"}], PROMPT, [FN], AUTO)
    assert system["role"] == "system" and user == {"role": "user", "content": "hi"}
    assert json.dumps(FN) in system["content"].splitlines()
    assert system["content"].startswith(DEFAULT_TOOL_PROMPT.split("{tools}")[0])


def test_an_existing_system_message_keeps_its_text_first() -> None:
    [system, _] = as_text(
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
        PROMPT,
        [FN],
        AUTO,
    )
    assert system["content"].startswith("Be brief.\n\nYou can call functions.")


def test_forced_choices_say_so() -> None:
    required = as_text([], PROMPT, [FN], ToolChoice("required"))[0]["content"]
    named = as_text([], PROMPT, [FN], ToolChoice("named", "get_time"))[0]["content"]
    assert required.endswith("You must call at least one function now.")
    assert named.endswith('You must call the function "get_time" now.')


def test_a_function_named_like_a_mode_is_still_a_named_choice() -> None:
    for name in ("auto", "required", "none"):
        fn = {**FN, "name": name}
        text = as_text([], PROMPT, [fn], ToolChoice("named", name))[0]["content"]
        assert text.endswith(f'You must call the function "{name}" now.')
    assert not as_text([], PROMPT, [FN], AUTO)[0]["content"].endswith("now.")


def test_calls_and_results_become_text_in_common_roles() -> None:
    messages = [
        {"role": "user", "content": "time?"},
        {"role": "assistant", "content": "Checking.", "tool_calls": CALLS},
        {"role": "tool", "tool_call_id": "call_7", "content": "09:00"},
        {"role": "tool", "tool_call_id": "call_9", "content": "late"},
        {"role": "user", "content": "thanks"},
    ]
    out = as_text(messages, PROMPT, None, NONE)
    assert out == [
        {"role": "user", "content": "time?"},
        {
            "role": "assistant",
            "content": 'Checking.\n[{"name": "get_time", "parameters": {"z": 1}}]',
        },
        {
            "role": "user",
            "content": "Result of get_time (call call_7):\n09:00\n\nResult of call call_9:\nlate",
        },
        {"role": "user", "content": "thanks"},
    ]
    assert messages[1]["tool_calls"] == CALLS  # the request's own messages are left alone


def test_template_format_hands_tools_to_the_template() -> None:
    messages = [{"role": "user", "content": "time?"}]
    assert conversation(TEMPLATE, messages, [TOOL], AUTO, mistral=False) == (messages, [TOOL])
    assert conversation(None, messages, None, NONE, mistral=False) == (messages, None)
    rendered, tools = conversation(PROMPT, messages, [TOOL], AUTO, mistral=False)
    assert tools is None and rendered[0]["role"] == "system"


def test_mistral_ids_keep_their_last_nine_characters() -> None:
    out = for_mistral(
        [
            {"role": "assistant", "tool_calls": [{**CALLS[0], "id": "call_abcdefghijk"}]},
            {"role": "tool", "tool_call_id": "call_abcdefghijk", "content": "x"},
        ]
    )
    assert out[0]["tool_calls"][0]["id"] == "cdefghijk"
    assert out[1]["tool_call_id"] == "cdefghijk"
