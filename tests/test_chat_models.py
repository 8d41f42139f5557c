"""OpenAI's current chat models: the simulator serves every model of the spec's list (and
fine-tunes of them) and refuses others as OpenAI does; requests to the reasoning models (GPT-5
family, o-series) go as they take them, and what they refuse is refused before it is paid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import voicenb as vnb
from voicenb import _chat_models as models


@pytest.mark.parametrize("model", ["gpt-5.5", "gpt-5.4-mini", "gpt-5.4", "gpt-5.6-luna",
                                   "gpt-4o-mini", "o4-mini",
                                   "ft:gpt-4o-mini-2024-07-18:acme::abc123"])
def test_the_simulator_answers_current_models_and_fine_tunes(sim, model):
    answer = vnb.ask("What is the capital of France?", model=model)
    assert answer.model == model and answer.text.startswith("(simulated answer)")


def test_the_simulator_refuses_an_unknown_model_as_openai_does(sim):
    with pytest.raises(vnb.ModelNotFoundError):
        vnb.ask("Hi", model="gpt-9")


def test_the_simulator_lists_the_current_models(sim):
    import openai

    ids = {m.id for m in openai.OpenAI().models.list()}
    assert {"gpt-5.5", "gpt-5.4-mini", "gpt-4o-mini"} <= ids


def _raw(sim, **body):
    import requests

    return requests.post(f"{sim.url}/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "Hi"}], **body},
        headers={"Authorization": f"Bearer {sim.openai.key}"}, timeout=10)


@pytest.mark.parametrize("body,param,code", [
    ({"model": "gpt-5.4", "max_tokens": 50}, "max_tokens", "unsupported_parameter"),
    ({"model": "gpt-5", "temperature": 0.2}, "temperature", "unsupported_value"),
    ({"model": "gpt-5.4", "reasoning_effort": "minimal"}, "reasoning_effort",
     "unsupported_value"),
    ({"model": "gpt-5", "reasoning_effort": "none"}, "reasoning_effort", "unsupported_value"),
    ({"model": "gpt-4o-mini", "reasoning_effort": "low"}, "reasoning_effort",
     "unsupported_parameter"),
    ({"model": "gpt-5.2-pro", "reasoning_effort": "low"}, "reasoning_effort",
     "unsupported_value"),
])
def test_the_simulator_refuses_what_a_model_does_not_take(sim, body, param, code):
    r = _raw(sim, **body)
    assert r.status_code == 400
    error = r.json()["error"]
    assert (error["param"], error["code"], error["type"]) == (param, code,
                                                              "invalid_request_error")


@pytest.mark.parametrize("body", [
    {"model": "gpt-5.4", "max_completion_tokens": 50, "reasoning_effort": "none",
     "temperature": 0.2},                     # 5.1 and later sample at effort "none"
    {"model": "gpt-5.4", "temperature": 0.2},  # whose default is "none"
    {"model": "gpt-5-mini", "reasoning_effort": "minimal", "temperature": 1},
    {"model": "gpt-5.3-chat-latest", "temperature": 0.2, "max_tokens": 50},  # not reasoning
    {"model": "gpt-4o-mini", "temperature": 0.2, "max_tokens": 50},
])
def test_the_simulator_takes_what_a_model_takes(sim, body):
    assert _raw(sim, **body).status_code == 200


def test_max_tokens_goes_to_a_reasoning_model_as_max_completion_tokens(sim):
    answer = vnb.ask("Hi", model="gpt-5-mini", max_tokens=40)  # refused as max_tokens
    assert answer.text.startswith("(simulated answer)")


def test_the_configured_reasoning_effort_goes_to_reasoning_models_that_take_it(sim,
                                                                           monkeypatch):
    monkeypatch.setenv("VOICENB_REASONING_EFFORT", "low")
    for model in ("gpt-5.4", "gpt-5-mini", "gpt-4o-mini", "gpt-5.2-pro"):
        assert vnb.ask("Hi", model=model).text  # a model that cannot take it keeps its own
    assert models.adapt("gpt-5.4", {}, "low") == {"reasoning_effort": "low"}
    assert models.adapt("gpt-4o-mini", {}, "low") == {}
    assert models.adapt("gpt-5.2-pro", {}, "low") == {}


def test_a_sampling_parameter_a_reasoning_model_refuses_is_refused_before_it_is_paid(sim):
    with pytest.raises(vnb.ConfigError, match="'temperature' does not support 0.2 with this "
                                              "model.*Leave 'temperature' out"):
        vnb.ask("Hi", model="gpt-5-mini", temperature=0.2)
    assert sim.stats["chat_completions"] == 0


def test_an_unknown_reasoning_effort_setting_is_refused(monkeypatch):
    monkeypatch.setenv("VOICENB_REASONING_EFFORT", "fast")
    with pytest.raises(vnb.ConfigError, match="reasoning_effort='fast'.*none, minimal, low"):
        vnb.Chat(model="gpt-5.4")


def test_another_servers_models_get_their_parameters_as_given(sim):
    assert models.refused("llama3.2", {"temperature": 0.2}) is None
    assert models.adapt("llama3.2", {"max_tokens": 5}, "low") == {"max_tokens": 5}


def test_the_model_list_is_the_specs(tmp_path):
    """The list in voicenb matches openai-openapi's ModelIdsShared enum where the spec is on
    this machine (fetched by a developer); it is never copied into the repository."""
    spec = Path("/work/.mirror/openai+openai-openapi/repo")
    if not spec.exists():
        pytest.skip("openai-openapi is not fetched here")
    import subprocess

    text = subprocess.run(["git", "-C", str(spec), "show", "HEAD:openapi.json"],
                          capture_output=True, text=True, check=True).stdout
    enum = json.loads(text)["components"]["schemas"]["ModelIdsShared"]["anyOf"][1]["enum"]
    assert tuple(enum) == models.CHAT_MODELS
