"""Creating a transcript is billed, so it is never re-sent blindly: after a POST whose answer
was lost (the work done), voicenb finds the transcript it created instead of paying twice."""

from __future__ import annotations

import pytest

import voicenb as vnb

#: about the async API (upload, submit, poll): short clips would take the Sync API
pytestmark = pytest.mark.usefixtures("async_api")


def test_an_answer_lost_after_the_transcript_was_created_is_not_paid_twice(sim, sample):
    sim.inject("cut", "/v2/transcript", method="POST")  # served, then the connection cut
    t = vnb.transcribe(sample)
    assert t.text == "What is the capital of France?"
    assert sim.stats["transcripts"] == 1  # exactly one transcript for the turn
    assert [h.kind for h in sim.app.fault_log] == ["cut"]


@pytest.mark.parametrize("kind", ["cut", "malformed"])
def test_a_list_that_fails_is_read_again_before_anything_is_submitted_again(sim, sample, kind):
    # The soak's one duplicate: the list answered broken after a cut POST, and the client,
    # unable to tell, submitted again. Now it reads the list until it can tell.
    sim.inject("cut", "/v2/transcript", method="POST")
    sim.inject(kind, "/v2/transcript", method="GET", times=2)  # the list, twice
    t = vnb.transcribe(sample, settings=vnb.Settings(backoff=0.01))
    assert t.text == "What is the capital of France?"
    assert sim.stats["transcripts"] == 1
    assert [h.kind for h in sim.app.fault_log] == ["cut", kind, kind]


def test_a_list_that_never_answers_fails_the_turn_instead_of_paying_twice(sim, sample,
                                                                         tmp_path):
    settings = vnb.Settings(backoff=0.01, max_retries=2)
    s = vnb.Session("blind", home=str(tmp_path / "home"), settings=settings)
    sim.inject("cut", "/v2/transcript", method="POST")
    sim.inject("malformed", "/v2/transcript", method="GET", times=3)  # every reading
    with pytest.raises(vnb.ServiceError, match="broke off"):
        s.ask_audio(sample)
    assert s.history["status"].tolist() == ["error"]
    assert sim.stats["transcripts"] == 1
    # once the list answers, the rerun finds the transcript the cut POST created
    assert s.retry_failed(progress=False)[0].ok
    assert sim.stats["transcripts"] == 1


def test_an_answer_that_is_not_json_may_be_a_created_transcript(sim, sample):
    sim.inject("malformed", "/v2/transcript", method="POST")  # 200, half a body
    t = vnb.transcribe(sample, settings=vnb.Settings(backoff=0.01))
    assert t.ok and sim.stats["transcripts"] == 1
    kinds = [h.method + " " + h.path for h in sim.app.fault_log]
    assert kinds == ["POST /v2/transcript"]


def test_a_failure_before_the_work_is_sent_again(sim, sample):
    sim.inject("500", "/v2/transcript", method="POST", times=2)
    t = vnb.transcribe(sample, settings=vnb.Settings(backoff=0.01))
    assert t.ok and sim.stats["transcripts"] == 1


def test_a_session_turn_with_a_lost_submit_answer_has_one_transcript(sim, samples, tmp_path):
    s = vnb.Session("once", home=str(tmp_path / "home"))
    sim.inject("cut", "/v2/transcript", method="POST", times=3)
    turns = s.ask_many(samples, progress=False)
    assert [t.status for t in turns] == ["ok"] * 3
    assert sim.stats["transcripts"] == 3
    ledger = sim.assemblyai.ledger()
    assert all(ledger[t.audio_sha256]["transcripts"] == 1 for t in turns)


def test_the_list_endpoint_gives_the_newest_first_with_the_spec_fields(sim, samples):
    from voicenb.stt.assemblyai import recent

    client = vnb.AssemblyAI()
    ids = [client.transcribe(p).id for p in samples[:2]]
    items = recent(client.http, limit=5)
    assert [i["id"] for i in items] == ids[::-1]
    assert set(items[0]) == {"id", "resource_url", "status", "created", "completed",
                             "audio_url", "error"}
    assert items[0]["status"] == "completed" and items[0]["created"] <= items[0]["completed"]
