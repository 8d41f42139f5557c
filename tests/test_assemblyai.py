"""upload -> submit -> poll against the simulator over real loopback HTTP."""

from __future__ import annotations

import socket
import time

import pytest

import voicenb as vnb
from voicenb.stt.assemblyai import PollPolicy

#: about the async API (upload, submit, poll): short clips would take the Sync API
pytestmark = pytest.mark.usefixtures("async_api")


def fast_settings(**kw) -> vnb.Settings:
    """Quick backoff so fault tests don't sleep for long."""
    return vnb.Settings(backoff=0.05, **kw)


def test_transcribe_returns_the_registered_text_with_timings(sim, sample):
    t = vnb.transcribe(sample)
    assert t.status == "completed"
    assert t.text == "What is the capital of France?"
    assert t.id in sim.jobs
    assert t.backend == "assemblyai"
    assert t.audio_s == pytest.approx(1.98, abs=0.01)
    assert t.confidence == pytest.approx(0.93)
    assert 0 < t.upload_s < t.stt_s
    assert t.transcribe_s >= sim.jobs[t.id].processing_s
    assert t.polls >= 1
    assert t.polls == sim.jobs[t.id].polls


def test_transcribe_accepts_bytes_and_audio(sim, sample):
    assert vnb.transcribe(sample.read_bytes()).text == "What is the capital of France?"
    assert vnb.transcribe(vnb.Audio(sample)).text == "What is the capital of France?"


def test_unregistered_audio_gets_a_transcript_marked_simulated(sim, make_wav):
    t = vnb.transcribe(make_wav("tone.wav", 1.0))
    assert "simulated" in t.text


def test_options_are_passed_through_to_the_service(sim, sample):
    t = vnb.transcribe(sample, language_code="en_uk", speech_models=["universal-2"])
    assert sim.jobs[t.id].options["language_code"] == "en_uk"
    assert sim.jobs[t.id].options["speech_models"] == ["universal-2"]


def test_speech_models_are_sent_by_default(sim, sample):
    t = vnb.transcribe(sample)
    assert sim.jobs[t.id].options["speech_models"] == ["assemblyai-stt-3-7", "universal-2"]
    assert t.speech_model == "assemblyai-stt-3-7"


def test_the_models_are_a_setting_and_default_leaves_the_choice_to_the_account(
        sim, sample, monkeypatch):
    monkeypatch.setenv("VOICENB_SPEECH_MODELS", "universal-2")
    t = vnb.transcribe(sample)
    assert sim.jobs[t.id].options["speech_models"] == ["universal-2"]
    assert t.speech_model == "universal-2"
    monkeypatch.setenv("VOICENB_SPEECH_MODELS", "default")
    t = vnb.transcribe(sample)
    assert "speech_models" not in sim.jobs[t.id].options
    sim.assemblyai.account_default = "universal-3-5-pro"  # an account made before 2026-11-17
    assert vnb.transcribe(sample).speech_model == "universal-3-5-pro"


@pytest.mark.parametrize("body, accepted", [
    ({"speech_models": ["assemblyai-stt-3-7"]}, True),
    ({"speech_models": ["universal-3-5-pro", "universal-2"]}, True),  # deprecated, served
    ({}, True),
    ({"speech_models": ["best"]}, False),
    ({"speech_models": ["universal-3-pro"]}, False),
    ({"speech_models": ["slam-1"]}, False),
    ({"speech_models": []}, False),
    ({"speech_model": "universal-2"}, False),  # the singular parameter is gone
    ({"speech_model": "best"}, False),
])
def test_the_simulator_takes_the_documented_models_only(sim, sample, body, accepted):
    import requests

    headers = {"Authorization": sim.assemblyai.key}
    url = requests.post(f"{sim.url}/v2/upload", data=sample.read_bytes(), headers=headers,
                        timeout=10).json()["upload_url"]
    r = requests.post(f"{sim.url}/v2/transcript", json={"audio_url": url, **body},
                      headers=headers, timeout=10)
    assert (r.status_code == 200) is accepted, r.text
    if not accepted:
        assert set(r.json()) == {"error"} and "speech_models" in r.json()["error"]


def test_rejected_option_is_a_service_error_with_the_services_text(sim, sample):
    with pytest.raises(vnb.ServiceError) as info:
        vnb.transcribe(sample, speech_models=["nano"])
    assert info.value.status_code == 400
    assert '"speech_models" must be a non-empty list' in str(info.value)


def test_service_error_status_raises_transcription_error_with_id(sim, sample):
    sim.fail_audio(sample, "Transcoding failed (simulated).")
    with pytest.raises(vnb.TranscriptionError) as info:
        vnb.transcribe(sample)
    assert info.value.transcript_id in sim.jobs
    assert info.value.detail == "Transcoding failed (simulated)."
    assert info.value.transcript_id in str(info.value)


def test_polling_times_out_with_the_transcript_id(sim, sample):
    sim.assemblyai.processing_fixed = 30
    with pytest.raises(vnb.ServiceTimeoutError) as info:
        vnb.transcribe(sample, settings=vnb.Settings(poll_timeout=0.5))
    assert info.value.transcript_id in sim.jobs
    assert info.value.transcript_id in str(info.value)
    assert "poll_timeout" in str(info.value)


def test_poll_schedule_starts_quick_and_backs_off_to_a_ceiling():
    p = PollPolicy(first=0.1, growth=1.5, ceiling=2.0)
    delays = [p.delay(n, 0.0, None, 0) for n in range(12)]
    assert delays[0] == 0.1
    assert delays == sorted(delays)
    assert max(delays) == 2.0


def test_poll_schedule_sleeps_until_the_predicted_finish_then_checks_densely():
    p = PollPolicy(dense=0.1, lead=0.85, ceiling=5.0)
    assert p.delay(1, 0.0, 4.0, 0) == pytest.approx(3.4)
    assert p.delay(2, 3.4, 4.0, 1) == pytest.approx(0.13)


def test_the_client_learns_how_long_transcripts_take(sim, samples):
    client = vnb.AssemblyAI(poll=PollPolicy())
    assert client._estimator.predict(2.0) is None  # nothing known yet: the plain schedule
    for s in samples * 2:
        client.transcribe(s)
    for s in samples:  # it now predicts each clip's processing time, from its length
        job = next(j for j in sim.jobs.values() if j.audio_s == vnb.Audio(s).duration)
        assert client._estimator.predict(job.audio_s) == pytest.approx(job.processing_s,
                                                                       rel=0.3)


# -- faults ---------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["429", "500", "502", "503", "drop"])
@pytest.mark.parametrize("path", ["/v2/upload", "/v2/transcript"])
def test_transient_faults_are_retried(sim, sample, kind, path):
    sim.inject(kind, path, times=2, retry_after=0)
    t = vnb.transcribe(sample, settings=fast_settings())
    assert t.text == "What is the capital of France?"
    assert sim.stats[f"fault:{kind}"] == 2
    assert sim.stats["uploads"] == 1
    assert sim.stats["transcripts"] == 1


def test_retry_after_is_honoured(sim, sample):
    sim.inject("429", "/v2/upload", retry_after=1)
    t0 = time.monotonic()
    vnb.transcribe(sample, settings=fast_settings())
    assert time.monotonic() - t0 >= 1.0


def test_slow_response_times_out_and_is_retried(sim, sample):
    sim.inject("slow", "/v2/transcript", method="POST", delay=3)
    t = vnb.transcribe(sample, settings=fast_settings(read_timeout=0.5))
    assert t.ok
    assert sim.stats["fault:slow"] == 1
    assert sim.stats["transcripts"] == 1


def test_garbled_poll_answer_is_ridden_out(sim, sample):
    sim.inject("malformed", "/v2/transcript/", method="GET")
    assert vnb.transcribe(sample, settings=fast_settings()).ok


def test_garbled_submit_answer_every_time_is_a_service_error(sim, sample):
    # a 200 that is not JSON may have created one: the list is read before each new POST
    sim.inject("malformed", "/v2/transcript", method="POST", times=100)
    with pytest.raises(vnb.ServiceError, match="not JSON"):
        vnb.transcribe(sample, settings=fast_settings(max_retries=2))
    assert sim.stats["fault:malformed"] == 3 and sim.stats["transcripts"] == 0


def test_rate_limit_that_never_ends_is_a_rate_limit_error(sim, sample):
    sim.inject("429", "/v2/upload", times=100, retry_after=0)
    with pytest.raises(vnb.RateLimitError) as info:
        vnb.transcribe(sample, settings=fast_settings(max_retries=2))
    assert info.value.status_code == 429
    assert "Too Many Requests" in str(info.value)
    assert sim.stats["fault:429"] == 3


def test_server_errors_that_never_end_are_a_service_error(sim, sample):
    sim.inject("503", "/v2/upload", times=100)
    with pytest.raises(vnb.ServiceError) as info:
        vnb.transcribe(sample, settings=fast_settings(max_retries=1))
    assert info.value.status_code == 503


def test_client_errors_are_not_retried(sim, sample):
    with pytest.raises(vnb.ServiceError):
        vnb.transcribe(sample, speech_models=[], settings=fast_settings())
    assert sim.stats["transcripts"] == 0
    assert sim.stats["requests"] == 2  # one upload, one rejected submit


def test_unreachable_service_is_a_service_error_that_says_so(sample):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = fast_settings(assemblyai_api_key="k", assemblyai_base_url=f"http://127.0.0.1:{port}",
                             max_retries=1)
    with pytest.raises(vnb.ServiceError, match="Cannot reach AssemblyAI"):
        vnb.transcribe(sample, settings=settings)


def test_no_library_exception_escapes(sim, sample):
    sim.inject("drop", "/", times=100)
    with pytest.raises(vnb.VoicenbError):
        vnb.transcribe(sample, settings=fast_settings(max_retries=1))


# -- batch ----------------------------------------------------------------------------------


def test_transcribe_many_keeps_input_order(sim, samples):
    items = samples * 4
    ts = vnb.transcribe_many(items, progress=False)
    expected = [vnb.sim.Simulator().registry.text(vnb.Audio(p).sha256) for p in items]
    assert [t.text for t in ts] == expected
    assert [t.source for t in ts] == [str(p) for p in items]


def test_transcribe_many_turns_failures_into_error_items(sim, samples, tmp_path):
    (tmp_path / "notes.txt").write_text("not audio")
    sim.fail_audio(samples[1], "Audio too noisy (simulated).")
    ts = vnb.transcribe_many([samples[0], "missing.wav", samples[1], tmp_path / "notes.txt"],
                             progress=False)
    assert [t.status for t in ts] == ["completed", "error", "error", "error"]
    assert "not found" in ts[1].error
    assert ts[2].error == "Audio too noisy (simulated)."
    assert ts[2].id in sim.jobs
    assert "not an audio file" in ts[3].error


def test_transcribe_many_runs_concurrently(sim, samples):
    sim.assemblyai.processing_fixed = 1.0
    ts = vnb.transcribe_many(samples * 4, concurrency=12, progress=False)
    assert all(t.ok for t in ts)
    jobs = list(sim.jobs.values())
    # the service had several of them in hand at once, not one after another
    busiest = max(sum(k.created <= j.created < k.finished for k in jobs) for j in jobs)
    assert busiest >= 6


def test_transcribe_many_respects_the_concurrency_limit_of_the_service(sim, samples):
    sim.assemblyai.concurrency = 2
    ts = vnb.transcribe_many(samples * 2, progress=False)
    jobs = sorted(sim.jobs.values(), key=lambda j: j.started)
    assert all(t.ok for t in ts)
    for j in jobs:  # at each start, at most two are processing
        busy = [k for k in jobs if k.started <= j.started < k.finished]
        assert len(busy) <= 2
    assert any(j.started > j.created for j in jobs)  # some had to wait in the queue


def test_transcribe_many_of_nothing_is_empty(sim):
    assert vnb.transcribe_many([], progress=False) == []


def test_transcribe_many_rejects_zero_concurrency(sim, sample):
    with pytest.raises(vnb.ConfigError, match="concurrency"):
        vnb.transcribe_many([sample], concurrency=0, progress=False)


def test_transcribe_many_shows_progress(sim, samples, capsys):
    vnb.transcribe_many(samples, progress=True)
    assert "3/3" in capsys.readouterr().err
