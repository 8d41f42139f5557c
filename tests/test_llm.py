"""Chat through the openai SDK against the simulator: streaming, memory, timings, errors."""

from __future__ import annotations

import socket

import pytest

import voicenb as vnb

QUESTION = "What is the capital of France?"


def fast(**kw) -> vnb.Settings:
    return vnb.Settings(**kw)


def test_ask_returns_the_answer_with_model_tokens_and_timings(sim):
    a = vnb.ask(QUESTION)
    assert a.text.startswith("(simulated answer) You asked: \u201cWhat is the capital of France?")
    assert a.model == "gpt-5.4-mini"
    assert a.prompt_tokens > 0 and a.completion_tokens > 0
    assert 0 < a.ttft_s < a.llm_s
    assert sim.stats["chat_completions"] == 1


def test_ttft_and_llm_s_reflect_the_service_delays(sim):
    sim.openai.ttft, sim.openai.token_rate = 0.3, 100
    a = vnb.ask(QUESTION)
    assert a.ttft_s >= 0.3
    assert a.llm_s >= 0.3 + (a.completion_tokens - 1) / 100


def test_usage_counts_are_the_services(sim):
    from voicenb.sim._openai import answer_for, count_tokens, tokens_of

    messages = [{"role": "user", "content": QUESTION}]
    a = vnb.ask(QUESTION)
    assert a.prompt_tokens == count_tokens(QUESTION) + 4
    assert a.completion_tokens == len(tokens_of(answer_for(messages)))


def test_model_is_chosen_by_argument_settings_or_environment(sim, monkeypatch):
    assert vnb.ask("hi", model="gpt-4o").model == "gpt-4o"
    assert vnb.ask("hi", settings=vnb.Settings(model="gpt-4.1")).model == "gpt-4.1"
    monkeypatch.setenv("VOICENB_MODEL", "gpt-4.1-mini")
    assert vnb.ask("hi").model == "gpt-4.1-mini"


def test_stream_prints_tokens_as_they_arrive_in_a_terminal(sim, capsys):
    seen = []
    chat = vnb.Chat()
    a = chat.ask(QUESTION, stream=True, on_token=seen.append)
    assert len(seen) == a.completion_tokens
    assert "".join(seen) == a.text
    assert capsys.readouterr().out == a.text + "\n"


def test_without_stream_nothing_is_printed(sim, capsys):
    vnb.ask(QUESTION)
    assert capsys.readouterr().out == ""


def test_system_prompt_is_sent_first(sim):
    chat = vnb.Chat(system="Answer in one sentence.")
    assert chat.messages("hi")[0] == {"role": "system", "content": "Answer in one sentence."}


def test_chat_remembers_earlier_turns(sim):
    chat = vnb.Chat()
    first = chat.ask("What is the capital of France?")
    second = chat.ask("And of Italy?")
    assert "I remember 1 earlier question" in second.text
    sent = chat.messages("next")
    assert sent[:2] == [{"role": "user", "content": "What is the capital of France?"},
                        {"role": "assistant", "content": first.text}]
    assert second.prompt_tokens > first.prompt_tokens


def test_memory_is_bounded_by_turns(sim):
    chat = vnb.Chat(max_history=2)
    for i in range(5):
        chat.ask(f"question {i}")
    sent = chat.messages("last")
    assert [m["content"] for m in sent if m["role"] == "user"] == [
        "question 3", "question 4", "last"]


def test_memory_is_bounded_by_tokens(sim):
    chat = vnb.Chat(history_tokens=1000)
    for i in range(10):
        chat.ask(f"question {i} " + "padding " * 40)
    sent = chat.messages("last")
    assert 1 < len(sent) < 10
    assert sent[-1]["content"] == "last"
    assert sent[-3]["content"].startswith("question 9")  # the newest turns are the ones kept


def test_a_failed_turn_is_not_remembered(sim):
    chat = vnb.Chat(settings=fast(max_retries=0))
    chat.ask("one")
    sim.inject("500", "/v1/chat/completions", times=10)
    with pytest.raises(vnb.ServiceError):
        chat.ask("two")
    assert [q for q, _ in chat.history] == ["one"]


def test_reset_forgets(sim):
    chat = vnb.Chat()
    chat.ask("one")
    chat.reset()
    assert chat.messages("two") == [{"role": "user", "content": "two"}]


def test_empty_prompt_is_rejected_before_any_request(sim):
    with pytest.raises(vnb.ConfigError, match="empty"):
        vnb.ask("   ")
    assert sim.stats["chat_completions"] == 0


# -- keys and servers -----------------------------------------------------------------------


def test_default_openai_url_without_a_key_names_every_way_to_set_it():
    with pytest.raises(vnb.ConfigError) as info:
        vnb.ask("hi")
    message = str(info.value)
    assert "OPENAI_API_KEY" in message and ".env" in message and "Settings(openai_api_key=" \
        in message


def test_compatible_server_needs_no_key(monkeypatch):
    with vnb.sim.running(openai_key=None) as sim:
        assert "OPENAI_API_KEY" not in __import__("os").environ
        a = vnb.ask(QUESTION)
        assert a.text.startswith("(simulated answer)")
        assert sim.stats["chat_completions"] == 1


def test_base_url_argument_points_at_any_compatible_server():
    with vnb.sim.Simulator(openai_key=None) as sim:
        a = vnb.ask(QUESTION, base_url=f"{sim.url}/v1", model="gpt-4o")
        assert a.model == "gpt-4o"


# -- errors ---------------------------------------------------------------------------------

SECRET = "sk-test-secret-51d0e1"


def test_wrong_key_is_an_authentication_error_without_the_key(sim):
    with pytest.raises(vnb.AuthenticationError) as info:
        vnb.ask("hi", api_key=SECRET)
    assert info.value.status_code == 401
    assert "Incorrect API key" in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in repr(info.value)


def test_unknown_model_says_how_to_choose_one(sim):
    with pytest.raises(vnb.ModelNotFoundError) as info:
        vnb.ask("hi", model="gpt-9-imaginary")
    message = str(info.value)
    assert "gpt-9-imaginary" in message and "VOICENB_MODEL" in message and "model=" in message
    assert info.value.status_code == 404


def test_rate_limit_is_retried_by_the_sdk(sim):
    sim.inject("429", "/v1/chat/completions", times=1, retry_after=0)
    assert vnb.ask("hi").text
    assert sim.stats["fault:429"] == 1


def test_rate_limit_after_the_sdks_retries_is_a_rate_limit_error(sim):
    sim.inject("429", "/v1/chat/completions", times=10, retry_after=0)
    with pytest.raises(vnb.RateLimitError) as info:
        vnb.ask("hi", settings=fast(max_retries=1))
    assert info.value.retry_after == 0
    assert sim.stats["fault:429"] == 2  # one try and the SDK's one retry: no second layer


def test_server_error_after_retries_is_a_service_error(sim):
    sim.inject("500", "/v1/chat/completions", times=10)
    with pytest.raises(vnb.ServiceError) as info:
        vnb.ask("hi", settings=fast(max_retries=0))
    assert info.value.status_code == 500


def test_slow_answer_is_a_timeout(sim):
    sim.inject("slow", "/v1/chat/completions", delay=3)
    with pytest.raises(vnb.ServiceTimeoutError):
        vnb.ask("hi", settings=fast(read_timeout=0.5, max_retries=0))


def test_unreachable_server_is_a_connection_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(vnb.ServiceError, match="Cannot reach OpenAI"):
        vnb.ask("hi", base_url=f"http://127.0.0.1:{port}/v1", settings=fast(max_retries=0))


def test_answer_stream_cut_midway_twice_is_a_service_error(sim, capsys):
    # a first cut is asked to continue once (tests/test_talkback_faults.py); a second fails
    sim.inject("cut", "/v1/chat/completions", after=4, times=2)
    with pytest.raises(vnb.ServiceError, match="cut off, and again"):
        vnb.ask("hi", stream=True)


def test_prompt_too_long_for_the_context_says_so(sim):
    sim.openai.context_window = 50
    with pytest.raises(vnb.ServiceError, match="too long"):
        vnb.ask("word " * 400)


# -- notebook display -----------------------------------------------------------------------


def test_streaming_in_a_notebook_updates_one_output_in_place(sim, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import voicenb as vnb\n"
        f"a = vnb.ask('<b>bold</b> question', stream=True, base_url='{sim.url}/v1', "
        f"api_key='{sim.openai.key}')")]
    NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    assert len(outputs) == 1  # one area, updated in place: no flood of outputs
    assert outputs[0]["output_type"] == "display_data"
    assert set(outputs[0]["data"]) == {"text/plain"}  # shown as text, never as HTML
    assert "<b>bold</b> question" in outputs[0]["data"]["text/plain"]


# -- Whisper --------------------------------------------------------------------------------


def test_whisper_backend_transcribes(sim, sample):
    t = vnb.transcribe(sample, backend="openai")
    assert t.text == "What is the capital of France?"
    assert t.backend == "openai"
    assert t.status == "completed"
    assert t.audio_s == pytest.approx(1.98, abs=0.01)
    assert 0 < t.stt_s
    assert sim.stats["audio_transcriptions"] == 1


def test_whisper_model_is_selectable(sim, sample):
    t = vnb.transcribe(sample, backend="openai", model="gpt-4o-mini-transcribe")
    assert t.ok


def test_whisper_unknown_model_is_a_service_error(sim, sample):
    with pytest.raises(vnb.ServiceError, match="Invalid model"):
        vnb.transcribe(sample, backend="openai", model="whisper-9")


def test_whisper_checks_25_mb_before_upload(sim, make_wav):
    big = make_wav("big.wav", 1.0)
    with open(big, "r+b") as fh:
        fh.truncate(26 * 1024 * 1024)
    with pytest.raises(vnb.AudioError, match="25 MB"):
        vnb.transcribe(big, backend="openai")
    assert sim.stats["requests"] == 0


def test_whisper_backend_from_the_environment(sim, sample, monkeypatch):
    monkeypatch.setenv("VOICENB_STT", "openai")
    assert vnb.transcribe(sample).backend == "openai"


def test_whisper_batch_keeps_order_and_reports_failures(sim, samples):
    ts = vnb.transcribe_many([samples[1], "missing.wav", samples[0]], backend="openai",
                             progress=False)
    assert [t.status for t in ts] == ["completed", "error", "completed"]
    assert ts[0].text == "How far away is the moon?"


def test_unknown_backend_lists_the_choices(sim, sample):
    with pytest.raises(vnb.ConfigError, match="assemblyai, openai"):
        vnb.transcribe(sample, backend="nope")
