"""Hostile and odd input: markup in what is heard and answered, strange file names, files over
the services' limits, prompts longer than the model's context."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from html.parser import HTMLParser

import pytest

import voicenb as vnb

FRANCE = "What is the capital of France?"
PAYLOAD = ('Say <script>alert(1)</script> & <img src=x onerror="alert(2)"> '
           '"\'><svg/onload=alert(3)></div><iframe src="javascript:alert(4)"></iframe>')
#: spaces, quotes of both kinds, non-ASCII letters, shell characters
ODD_NAME = 'what\'s "the" capital — ça va, 日本 $HOME `id`.wav'

#: the tags voicenb's own HTML and pandas' tables use; anything else came from the text
OWN_TAGS = {"div", "b", "span", "br", "small", "table", "thead", "tbody", "tr", "th", "td",
            "p", "h4", "style"}


class _Markup(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text = ""

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, attrs))

    def handle_data(self, data):
        self.text += data


def shown(html: str) -> str:
    """The text a browser shows for ``html``, after checking that nothing in it is markup
    voicenb did not write itself: no other element, no event handler, no script URL."""
    parser = _Markup()
    parser.feed(html)
    parser.close()
    for tag, attrs in parser.tags:
        assert tag in OWN_TAGS, f"<{tag}> became an element in {html!r}"
        for name, value in attrs:
            assert not name.startswith("on"), f"{name}= became a handler in {html!r}"
            assert "javascript:" not in (value or "").lower(), html
    return parser.text


# -- markup in transcripts, answers and errors ----------------------------------------------


@pytest.fixture
def session(sim, tmp_path):
    return vnb.Session("hostile", home=str(tmp_path / "home"),
                       settings=vnb.Settings(backoff=0.05))


def test_the_recorder_shows_markup_in_a_transcript_and_answer_as_text(session, sim,
                                                                      make_wav):
    clip = make_wav("tone.wav", 1.0)
    sim.register(clip, PAYLOAD)
    rec = session.recorder()
    rec.submit(clip)
    assert rec.wait(30)
    # The kernel keeps text as text; the page sets it with textContent (the browser tests
    # check that no element comes of it).
    assert rec.transcript == PAYLOAD
    assert PAYLOAD in rec.answer  # the simulated answer repeats it
    assert rec.turns[0]["said"] == PAYLOAD and PAYLOAD in rec.turns[0]["answer"]
    assert "done" in rec.status


def test_the_recorder_shows_markup_in_an_error_and_a_file_name_as_text(session, sim,
                                                                      copy_sample):
    clip = copy_sample('<img src=x onerror="alert(5)">.wav')
    sim.fail_audio(clip, f"Transcoding failed: {PAYLOAD}")
    rec = session.recorder()
    rec.submit(clip)
    rec.submit(clip.parent / "<script>alert(6)</script>.wav")  # no such file
    assert rec.wait(30)
    assert session.history["status"].tolist() == ["error", "error"]
    assert "<script>alert(6)</script>.wav" in rec.status and "not found" in rec.status
    said = [row["said"] for row in rec.turns]
    assert any(PAYLOAD in s for s in said)
    assert any("<script>alert(6)</script>.wav" in s for s in said)


def test_the_history_table_shows_markup_as_text(session, sim, make_wav):
    clip = make_wav("tone.wav", 1.0)
    sim.register(clip, PAYLOAD)
    session.ask_audio(clip)
    df = session.history
    shown(df._repr_html_())
    assert PAYLOAD in shown(df.to_html())


def test_the_summary_of_a_hostile_history_is_plain_tables(session, sim, make_wav):
    heard, failed = make_wav("tone.wav", 1.0), make_wav("other.wav", 1.5)
    sim.register(heard, PAYLOAD)
    sim.fail_audio(failed, PAYLOAD)
    session.ask_many([heard, failed], progress=False)
    text = shown(vnb.summary(session.history)._repr_html_())
    assert "latency" in text and "by status" in text


# -- odd file names -----------------------------------------------------------------------------


@pytest.fixture
def odd(copy_sample):
    return copy_sample(ODD_NAME)


@pytest.mark.parametrize("backend", ["assemblyai", "openai"])
def test_transcribe_takes_a_name_with_spaces_quotes_and_unicode(sim, odd, backend):
    t = vnb.transcribe(odd, backend=backend)
    assert t.text == FRANCE and t.source == str(odd)


def test_transcribe_many_names_odd_files_in_its_results(sim, odd):
    missing = odd.with_name("n'existe \"pas\" — 日本.wav")
    ok, failed = vnb.transcribe_many([odd, missing], progress=False)
    assert (ok.status, ok.text, ok.source) == ("completed", FRANCE, str(odd))
    assert failed.status == "error" and failed.source == str(missing)
    assert "not found" in failed.error and "日本" in failed.error


def test_a_session_takes_odd_names_and_records_them(session, odd):
    turn = session.ask_audio(odd)
    assert turn.ok and turn.transcript == FRANCE
    missing = odd.with_name("n'existe \"pas\" — 日本.wav")
    turns = session.ask_many([odd, missing], progress=False)
    assert [t.status for t in turns] == ["ok", "error"]
    df = session.history
    assert df["audio_path"].iloc[2] == str(missing)  # the name the user gave, as given
    assert (session.store.home / df["audio_path"].iloc[0]).read_bytes() == odd.read_bytes()
    assert vnb.load_history(str(session.store.home))["status"].tolist() == ["ok", "ok", "error"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voicenb.cli", *args], capture_output=True,
                          text=True, encoding="utf-8", env=dict(os.environ), timeout=120)


def test_the_cli_transcribes_odd_names(sim, odd):
    out = _cli("transcribe", str(odd))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"{odd}\t{FRANCE}"]
    out = _cli("transcribe", "--json", str(odd))
    assert json.loads(out.stdout)["file"] == str(odd)


def test_the_cli_asks_and_shows_history_for_odd_names(sim, odd, tmp_path):
    home = tmp_path / "cli home — ça"
    out = _cli("ask", str(odd), "--session", 'it\'s "odd" 日本', "--home", str(home))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == f"Me:  {FRANCE}"
    out = _cli("history", "--home", str(home))
    assert out.returncode == 0 and FRANCE in out.stdout and "日本" in out.stdout
    csv = tmp_path / "export «odd».csv"
    assert _cli("history", "--home", str(home), "--csv", str(csv)).returncode == 0
    assert "it's \"\"odd\"\" 日本" in csv.read_text(encoding="utf-8")


# -- over the size limit --------------------------------------------------------------------------


def sparse_wav(path, size: int):
    """A WAV whose header says it holds ``size`` bytes; the file is sparse, so it takes no
    disk space and writing it takes no time."""
    rate = 16000
    data = size - 44
    header = (b"RIFF" + struct.pack("<I", size - 8) + b"WAVE" + b"fmt "
              + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
              + b"data" + struct.pack("<I", data))
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(size)
    return path


LIMITS = {"assemblyai": 2_200_000_000, "openai": 25 * 1024 * 1024}


@pytest.mark.parametrize("backend", ["assemblyai", "openai"])
def test_a_file_over_the_limit_is_refused_before_any_upload(sim, tmp_path, backend):
    big = sparse_wav(tmp_path / "long lecture.wav", LIMITS[backend] + 2)
    with pytest.raises(vnb.AudioError, match="over the limit") as info:
        vnb.transcribe(big, backend=backend)
    assert "long lecture.wav" in str(info.value)
    [t] = vnb.transcribe_many([big], backend=backend, progress=False)
    assert t.status == "error" and "over the limit" in t.error
    assert sim.stats["requests"] == 0


def test_a_file_at_the_limit_is_not_refused(sim, tmp_path):
    at = sparse_wav(tmp_path / "at.wav", LIMITS["openai"])
    vnb.Audio(at).check_size(LIMITS["openai"], "OpenAI")


@pytest.mark.parametrize("backend", ["assemblyai", "openai"])
def test_a_session_refuses_a_file_over_the_limit_without_copying_it(sim, tmp_path, backend):
    session = vnb.Session("big", home=str(tmp_path / "home"), stt=backend)
    big = sparse_wav(tmp_path / "long lecture.wav", LIMITS[backend] + 2)
    with pytest.raises(vnb.AudioError, match="over the limit"):
        session.ask_audio(big)
    row = session.history.iloc[-1]
    assert row["status"] == "error" and "Split it or compress it" in row["error"]
    assert row["audio_path"] == str(big)
    assert list((tmp_path / "home" / "audio").iterdir()) == []
    assert sim.stats["requests"] == 0


# -- longer than the model's context ---------------------------------------------------------


def test_a_long_conversation_is_trimmed_to_fit_the_models_context(sim):
    sim.openai.context_window, sim.openai.token_rate = 3000, 1e6  # long answers, quickly
    chat = vnb.Chat(history_tokens=1_000_000)  # no budget of its own: the model's limit rules
    answers = [chat.ask(f"Question {i}: " + "tell me more. " * 200) for i in range(8)]
    assert all(a.text.startswith("(simulated answer)") for a in answers)
    assert "I remember" in answers[-1].text and "7 earlier" not in answers[-1].text
    assert all(a.prompt_tokens <= 3000 for a in answers)
    assert chat.history[-1][0].startswith("Question 7")


def test_a_session_of_long_questions_keeps_answering(sim, tmp_path, make_wav):
    sim.openai.context_window, sim.openai.token_rate = 3000, 1e6  # long answers, quickly
    clips = [make_wav(f"long {i}.wav", 1.0 + i / 10) for i in range(5)]
    for i, clip in enumerate(clips):
        sim.register(clip, f"Long question {i}: " + "and then what happened? " * 90)
    session = vnb.Session("long", home=str(tmp_path / "home"))
    assert [t.status for t in session.ask_many(clips, progress=False)] == ["ok"] * 5


def test_a_prompt_too_long_on_its_own_says_so(sim):
    sim.openai.context_window, sim.openai.token_rate = 3000, 1e6  # long answers, quickly
    chat = vnb.Chat()
    chat.ask(FRANCE)
    with pytest.raises(vnb.ServiceError, match="prompt alone is too long") as info:
        chat.ask("word " * 20_000)
    assert "Shorten it" in str(info.value) and "3000 tokens" in str(info.value)
    assert [q for q, _ in chat.history] == [FRANCE]  # nothing forgotten, nothing added


def test_a_session_turn_too_long_for_the_model_is_an_error_that_says_so(session, sim,
                                                                       make_wav):
    sim.openai.context_window, sim.openai.token_rate = 3000, 1e6  # long answers, quickly
    clip = make_wav("ramble.wav", 1.0)
    sim.register(clip, "word " * 20_000)
    with pytest.raises(vnb.ServiceError, match="prompt alone is too long"):
        session.ask_audio(clip)
    row = session.history.iloc[-1]
    assert row["status"] == "error" and "prompt alone is too long" in row["error"]
    assert row["transcript"].startswith("word word")  # the transcript is kept


# -- odd settings ---------------------------------------------------------------------------------


def test_a_prompt_template_with_other_braces_is_refused_up_front(tmp_path):
    # It used to fail only at the first answer, with a bare KeyError that stopped a batch.
    with pytest.raises(vnb.ConfigError, match="Write a literal brace twice"):
        vnb.Session("t", home=str(tmp_path / "home"),
                    prompt_template='Reply as JSON {"answer": ...}: {transcript}')


def test_literal_braces_and_braces_in_a_transcript_are_kept(sim, tmp_path, make_wav):
    clip = make_wav("braces.wav", 1.0)
    sim.register(clip, "What does {transcript} or {0} mean?")
    session = vnb.Session("t", home=str(tmp_path / "home"),
                          prompt_template='Reply as JSON {{"answer": ...}}: {transcript}')
    turn = session.ask_audio(clip)
    assert turn.prompt == 'Reply as JSON {"answer": ...}: What does {transcript} or {0} mean?'


def test_a_session_name_that_looks_like_sql_is_just_a_name(sim, tmp_path, sample):
    name = "demo'); DROP TABLE turns; --"
    vnb.Session(name, home=str(tmp_path / "home")).ask_audio(sample)
    df = vnb.load_history(str(tmp_path / "home"), session=name)
    assert df["session"].tolist() == [name] and df["status"].tolist() == ["ok"]
