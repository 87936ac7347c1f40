"""Request translation Ollama <-> OpenAI: every option both ways, unmapped names, formats, tools, images."""

import json

import pytest

from ollamaproxy.translate.requests import Translated, TranslationError, ollama_to_openai, openai_to_ollama

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
JPEG = "/9j/4AAQSkZJRgABAQ"
TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                        "required": ["city"]}}}
SCHEMA = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}


def body(t: Translated) -> dict:
    return json.loads(t.body)


def chat(**kw) -> dict:
    return {"model": "m:1b", "messages": [{"role": "user", "content": "hi"}], **kw}


# ------------------------------------------------------------------ Ollama -> OpenAI


def test_ollama_chat_basic_streams_by_default_and_asks_for_usage():
    t = ollama_to_openai("/api/chat", chat())
    assert t.path == "/v1/chat/completions" and t.stream is True and t.unmapped == ()
    assert body(t) == {"model": "m:1b", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                       "stream_options": {"include_usage": True}}


def test_ollama_stream_false_is_not_streamed():
    t = ollama_to_openai("/api/chat", chat(stream=False))
    assert t.stream is False
    b = body(t)
    assert b["stream"] is False and "stream_options" not in b


@pytest.mark.parametrize("stream", [None, True])
def test_ollama_stream_null_or_true_streams(stream):
    assert ollama_to_openai("/api/generate", {"model": "m", "prompt": "x", "stream": stream}).stream is True


@pytest.mark.parametrize("option,value,key,expected", [
    ("temperature", 0.3, "temperature", 0.3),
    ("top_p", 0.9, "top_p", 0.9),
    ("top_k", 20, "top_k", 20),
    ("seed", 42, "seed", 42),
    ("presence_penalty", 1.5, "presence_penalty", 1.5),
    ("frequency_penalty", 0.5, "frequency_penalty", 0.5),
    ("stop", ["\n", "user:"], "stop", ["\n", "user:"]),
    ("stop", "END", "stop", ["END"]),
    ("num_predict", 100, "max_tokens", 100),
    ("num_predict", 0, "max_tokens", 0),
])
def test_ollama_options_to_openai(option, value, key, expected):
    for path in ("/api/chat", "/api/generate"):
        payload = chat(options={option: value}) if path == "/api/chat" else {"model": "m", "prompt": "p",
                                                                              "options": {option: value}}
        t = ollama_to_openai(path, payload)
        assert body(t)[key] == expected
        assert t.unmapped == ()  # top_k included: llama.cpp accepts it, not reported


@pytest.mark.parametrize("value", [-1, -2])
def test_ollama_unlimited_num_predict_means_no_max_tokens(value):
    t = ollama_to_openai("/api/chat", chat(options={"num_predict": value}))
    assert "max_tokens" not in body(t) and t.unmapped == ()


def test_ollama_unmappable_options_and_fields_are_reported():
    t = ollama_to_openai("/api/generate", {
        "model": "m", "prompt": "p", "raw": True, "context": [1, 2], "template": "{{ .Prompt }}", "keep_alive": "5m",
        "think": True, "options": {"num_ctx": 8192, "mirostat": 1, "repeat_penalty": 1.1, "num_gpu": 1,
                                   "temperature": 0.1}})
    assert t.unmapped == ("context", "keep_alive", "mirostat", "num_ctx", "num_gpu", "raw", "repeat_penalty",
                          "template", "think")
    b = body(t)
    assert b["temperature"] == 0.1
    for name in ("num_ctx", "raw", "context", "keep_alive", "template", "options"):
        assert name not in b


def test_ollama_keep_alive_zero_is_reported_too():
    assert ollama_to_openai("/api/chat", chat(keep_alive=0)).unmapped == ("keep_alive",)


def test_ollama_format_json_and_schema():
    assert body(ollama_to_openai("/api/chat", chat(format="json")))["response_format"] == {"type": "json_object"}
    rf = body(ollama_to_openai("/api/generate", {"model": "m", "prompt": "p", "format": SCHEMA}))["response_format"]
    assert rf == {"type": "json_schema", "json_schema": {"name": "schema", "schema": SCHEMA}}
    assert "response_format" not in body(ollama_to_openai("/api/chat", chat(format="")))
    with pytest.raises(TranslationError, match="format"):
        ollama_to_openai("/api/chat", chat(format="yaml"))


def test_ollama_tools_and_tool_call_arguments_object_to_string():
    messages = [
        {"role": "user", "content": "weather in Paris and Rome?"},
        {"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
            {"function": {"name": "get_weather", "arguments": {"city": "Rome"}}}]},
        {"role": "tool", "content": "22C", "tool_name": "get_weather"},
        {"role": "tool", "content": "25C", "tool_name": "get_weather"},
    ]
    t = ollama_to_openai("/api/chat", {"model": "m", "messages": messages, "tools": [TOOL], "stream": False})
    b = body(t)
    assert b["tools"] == [TOOL] and t.unmapped == ()
    calls = b["messages"][1]["tool_calls"]
    assert [c["type"] for c in calls] == ["function", "function"]
    assert [json.loads(c["function"]["arguments"]) for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert all(isinstance(c["function"]["arguments"], str) for c in calls)
    ids = [c["id"] for c in calls]
    assert len(set(ids)) == 2
    # tool answers are matched to the calls in order (Ollama names the tool; OpenAI needs the id)
    assert [m["tool_call_id"] for m in b["messages"][2:]] == ids


def test_ollama_tool_message_keeps_explicit_id():
    messages = [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_abc", "function": {"name": "f", "arguments": {}}}]},
        {"role": "tool", "content": "ok", "tool_call_id": "call_abc"}]
    b = body(ollama_to_openai("/api/chat", {"model": "m", "messages": messages}))
    assert b["messages"][0]["tool_calls"][0]["id"] == "call_abc"
    assert b["messages"][0]["tool_calls"][0]["function"]["arguments"] == "{}"
    assert b["messages"][1]["tool_call_id"] == "call_abc"


def test_ollama_images_become_image_url_data_parts():
    t = ollama_to_openai("/api/chat", {"model": "m", "messages": [
        {"role": "user", "content": "what is this?", "images": [PNG, JPEG]}]})
    content = body(t)["messages"][0]["content"]
    assert content == [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{JPEG}"}},
    ]


def test_ollama_message_thinking_is_reported():
    t = ollama_to_openai("/api/chat", {"model": "m", "messages": [
        {"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "thinking": "hmm"}]})
    assert t.unmapped == ("thinking",)
    assert "thinking" not in body(t)["messages"][1]


def test_ollama_generate_plain_goes_to_completions_with_suffix():
    t = ollama_to_openai("/api/generate", {"model": "m", "prompt": "def f(", "suffix": "return x", "stream": False})
    assert t.path == "/v1/completions" and t.stream is False
    assert body(t) == {"model": "m", "prompt": "def f(", "suffix": "return x", "stream": False}


def test_ollama_generate_with_system_goes_to_chat_with_system_message():
    t = ollama_to_openai("/api/generate", {"model": "m", "prompt": "why?", "system": "be brief", "suffix": "s"})
    assert t.path == "/v1/chat/completions"
    assert body(t)["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "why?"}]
    assert t.unmapped == ("suffix",)  # chat has no suffix


def test_ollama_generate_with_images_goes_to_chat():
    t = ollama_to_openai("/api/generate", {"model": "m", "prompt": "describe", "images": [PNG]})
    assert t.path == "/v1/chat/completions"
    assert body(t)["messages"][0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")


def test_ollama_embed_list_and_single():
    t = ollama_to_openai("/api/embed", {"model": "e", "input": ["a", "b"], "truncate": True, "dimensions": 4,
                                         "options": {"num_ctx": 512}, "keep_alive": "1m"})
    assert t.path == "/v1/embeddings" and t.stream is False
    assert body(t) == {"model": "e", "input": ["a", "b"], "dimensions": 4, "encoding_format": "float"}
    assert t.unmapped == ("keep_alive", "num_ctx", "truncate")
    t = ollama_to_openai("/api/embed", {"model": "e", "input": "a"})
    assert body(t)["input"] == "a" and t.unmapped == ()
    t = ollama_to_openai("/api/embeddings", {"model": "e", "prompt": "hello"})
    assert t.path == "/v1/embeddings" and body(t) == {"model": "e", "input": "hello", "encoding_format": "float"}


@pytest.mark.parametrize("path,payload", [
    ("/api/show", {"model": "m"}),
    ("/api/pull", {"model": "m"}),
    ("/api/tags", {}),
    ("/api/chat", {"model": "m", "messages": []}),  # load / unload a model
    ("/api/generate", {"model": "m"}),
    ("/api/generate", {"model": "m", "prompt": "", "keep_alive": 0}),
    ("/api/embed", {"model": "m"}),
    ("/api/embeddings", {"model": "m", "prompt": ""}),
    ("/api/chat", {"messages": [{"role": "user", "content": "x"}]}),  # no model
    ("/api/chat", {"model": "m", "messages": "hi"}),
    ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "x", "images": [7]}]}),
    ("/api/embed", {"model": "m", "input": [1, 2]}),
])
def test_ollama_untranslatable_requests_raise_with_reason(path, payload):
    with pytest.raises(TranslationError) as caught:
        ollama_to_openai(path, payload)
    assert str(caught.value)
    assert isinstance(caught.value, ValueError)


def test_ollama_path_normalised():
    assert ollama_to_openai("/api/chat/", chat()).path == "/v1/chat/completions"


def test_translated_is_frozen():
    t = ollama_to_openai("/api/chat", chat())
    with pytest.raises(AttributeError):
        t.path = "/x"  # type: ignore[misc]


# ------------------------------------------------------------------ OpenAI -> Ollama


def ochat(**kw) -> dict:
    return {"model": "m:1b", "messages": [{"role": "user", "content": "hi"}], **kw}


def test_openai_chat_basic_does_not_stream_by_default():
    t = openai_to_ollama("/v1/chat/completions", ochat())
    assert t.path == "/api/chat" and t.stream is False and t.include_usage is False and t.unmapped == ()
    assert body(t) == {"model": "m:1b", "messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_openai_stream_and_include_usage():
    t = openai_to_ollama("/v1/chat/completions", ochat(stream=True, stream_options={"include_usage": True}))
    assert t.stream is True and t.include_usage is True and body(t)["stream"] is True
    t = openai_to_ollama("/v1/chat/completions", ochat(stream=True))
    assert t.include_usage is False
    t = openai_to_ollama("/v1/completions", {"model": "m", "prompt": "x", "stream": "yes"})
    assert t.stream is False  # only a literal true streams


@pytest.mark.parametrize("key,value,option,expected", [
    ("temperature", 0.3, "temperature", 0.3),
    ("top_p", 0.9, "top_p", 0.9),
    ("top_k", 20, "top_k", 20),
    ("seed", 42, "seed", 42),
    ("presence_penalty", 1.5, "presence_penalty", 1.5),
    ("frequency_penalty", 0.5, "frequency_penalty", 0.5),
    ("stop", ["\n"], "stop", ["\n"]),
    ("stop", "END", "stop", ["END"]),
    ("max_tokens", 64, "num_predict", 64),
    ("max_completion_tokens", 32, "num_predict", 32),
])
def test_openai_options_to_ollama(key, value, option, expected):
    for path, payload in (("/v1/chat/completions", ochat(**{key: value})),
                          ("/v1/completions", {"model": "m", "prompt": "p", key: value})):
        t = openai_to_ollama(path, payload)
        assert body(t)["options"] == {option: expected}
        assert t.unmapped == ()


def test_openai_max_completion_tokens_wins_over_max_tokens():
    t = openai_to_ollama("/v1/chat/completions", ochat(max_tokens=100, max_completion_tokens=7))
    assert body(t)["options"] == {"num_predict": 7}


def test_openai_unmappable_fields_are_reported_defaults_are_not():
    t = openai_to_ollama("/v1/chat/completions", ochat(n=2, logit_bias={"1": 5}, logprobs=True, top_logprobs=2,
                                                       user="u1", parallel_tool_calls=False, tool_choice="required",
                                                       metadata={"a": "b"}))
    assert t.unmapped == ("logit_bias", "logprobs", "metadata", "n", "parallel_tool_calls", "tool_choice",
                          "top_logprobs", "user")
    t = openai_to_ollama("/v1/chat/completions", ochat(n=1, logprobs=False, parallel_tool_calls=True,
                                                       tool_choice="auto", stream_options=None))
    assert t.unmapped == ()
    t = openai_to_ollama("/v1/completions", {"model": "m", "prompt": "p", "echo": True, "best_of": 3})
    assert t.unmapped == ("best_of", "echo")


def test_openai_keep_alive_passes_through():
    t = openai_to_ollama("/v1/chat/completions", ochat(keep_alive="10m"))
    assert body(t)["keep_alive"] == "10m" and t.unmapped == ()


def test_openai_response_format_to_format():
    b = body(openai_to_ollama("/v1/chat/completions", ochat(response_format={"type": "json_object"})))
    assert b["format"] == "json"
    rf = {"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}
    assert body(openai_to_ollama("/v1/completions", {"model": "m", "prompt": "p", "response_format": rf}))["format"] == SCHEMA
    assert "format" not in body(openai_to_ollama("/v1/chat/completions", ochat(response_format={"type": "text"})))
    with pytest.raises(TranslationError):
        openai_to_ollama("/v1/chat/completions", ochat(response_format={"type": "json_schema", "json_schema": {}}))


def test_openai_tools_and_tool_call_arguments_string_to_object():
    messages = [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "22C"},
    ]
    t = openai_to_ollama("/v1/chat/completions", {"model": "m", "messages": messages, "tools": [TOOL]})
    b = body(t)
    assert b["tools"] == [TOOL] and t.unmapped == ()
    assert b["messages"][2] == {"role": "assistant", "content": "",
                                "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
    assert b["messages"][3] == {"role": "tool", "content": "22C", "tool_call_id": "call_1", "tool_name": "get_weather"}


def test_openai_tool_choice_none_drops_tools():
    b = body(openai_to_ollama("/v1/chat/completions", ochat(tools=[TOOL], tool_choice="none")))
    assert "tools" not in b


def test_openai_bad_tool_arguments_raise():
    messages = [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]
    with pytest.raises(TranslationError, match="'f'"):
        openai_to_ollama("/v1/chat/completions", {"model": "m", "messages": messages})


def test_openai_image_url_data_parts_become_images():
    content = [{"type": "text", "text": "what"}, {"type": "text", "text": "is this?"},
               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"}}]
    b = body(openai_to_ollama("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": content}]}))
    assert b["messages"] == [{"role": "user", "content": "what\nis this?", "images": [PNG]}]


def test_openai_remote_image_url_is_refused():
    content = [{"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]
    with pytest.raises(TranslationError, match="data: URL"):
        openai_to_ollama("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": content}]})


def test_openai_developer_role_and_message_name():
    t = openai_to_ollama("/v1/chat/completions", {"model": "m", "messages": [
        {"role": "developer", "content": "rules"}, {"role": "user", "content": "x", "name": "bob"}]})
    assert body(t)["messages"][0] == {"role": "system", "content": "rules"}
    assert t.unmapped == ("name",)


def test_images_round_trip_both_ways():
    ollama_msg = {"role": "user", "content": "look", "images": [PNG]}
    there = body(ollama_to_openai("/api/chat", {"model": "m", "messages": [ollama_msg]}))
    back = body(openai_to_ollama("/v1/chat/completions", {"model": "m", "messages": there["messages"]}))
    assert back["messages"] == [ollama_msg]


def test_options_round_trip_both_ways():
    options = {"temperature": 0.5, "top_p": 0.8, "top_k": 30, "seed": 7, "stop": ["x"], "num_predict": 12,
               "presence_penalty": 0.1, "frequency_penalty": 0.2}
    there = body(ollama_to_openai("/api/chat", chat(options=options, format=SCHEMA, stream=False)))
    back = openai_to_ollama("/v1/chat/completions", there)
    assert body(back)["options"] == options and body(back)["format"] == SCHEMA and back.unmapped == ()


def test_openai_completions_prompt_and_suffix():
    t = openai_to_ollama("/v1/completions", {"model": "m", "prompt": ["def f("], "suffix": "  return 1"})
    assert t.path == "/api/generate"
    assert body(t) == {"model": "m", "prompt": "def f(", "suffix": "  return 1", "stream": False}


def test_openai_embeddings():
    t = openai_to_ollama("/v1/embeddings", {"model": "e", "input": ["a", "b"], "dimensions": 4,
                                            "encoding_format": "float"})
    assert t.path == "/api/embed" and t.stream is False and t.unmapped == ()
    assert body(t) == {"model": "e", "input": ["a", "b"], "dimensions": 4}
    t = openai_to_ollama("/v1/embeddings", {"model": "e", "input": "a", "encoding_format": "base64", "user": "u"})
    assert body(t)["input"] == "a"
    assert t.unmapped == ("encoding_format", "user")  # the answer carries floats


@pytest.mark.parametrize("path,payload", [
    ("/v1/models", {"model": "m"}),
    ("/v1/responses", {"model": "m", "input": "x"}),
    ("/v1/chat/completions", {"model": "m", "messages": []}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}),
    ("/v1/chat/completions", {"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
    ("/v1/completions", {"model": "m", "prompt": ["a", "b"]}),
    ("/v1/completions", {"model": "m", "prompt": [1, 2, 3]}),
    ("/v1/embeddings", {"model": "m", "input": [[1, 2]]}),
    ("/v1/embeddings", {"model": "m", "input": []}),
])
def test_openai_untranslatable_requests_raise_with_reason(path, payload):
    with pytest.raises(TranslationError) as caught:
        openai_to_ollama(path, payload)
    assert str(caught.value)


def test_non_object_payload_raises():
    with pytest.raises(TranslationError):
        ollama_to_openai("/api/chat", ["x"])  # type: ignore[arg-type]
    with pytest.raises(TranslationError):
        openai_to_ollama("/v1/chat/completions", "x")  # type: ignore[arg-type]
