"""Keys never leak: every feature runs with distinctive fake keys (and with wrong ones, for
401s) and DEBUG logging on, then everything it left behind is searched for them: the history,
the audio folder, exports, logs, printed output, CLI output, notebook outputs, exceptions."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest

import voicenb as vnb

AAI_KEY = "aai-CANARY-5f1e2d3c4b5a69788796a5b4"
OAI_KEY = "sk-proj-CANARY-0f9e8d7c6b5a4938271605f4"
WRONG_AAI = "aai-WRONGKEY-9a8b7c6d5e4f3a2b1c0d"
WRONG_OAI = "sk-proj-WRONGKEY-1a2b3c4d5e6f7a8b9c0d"
KEYS = (AAI_KEY, OAI_KEY, WRONG_AAI, WRONG_OAI)


def leaks(text: str | bytes) -> list[str]:
    """The keys in ``text``, whole or as a long prefix or suffix."""
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    found = []
    for key in KEYS:
        for part in (key, key[:16], key[-12:]):
            if part.encode() in data:
                found.append(part)
    return found


def assert_no_key_in_files(folder: Path) -> int:
    files = [p for p in folder.rglob("*") if p.is_file()]
    for path in files:
        assert not leaks(path.read_bytes()), f"{leaks(path.read_bytes())} in {path}"
    return len(files)


def error_texts(exc: BaseException) -> str:
    """Everything an exception shows: str, repr, args, detail, the formatted traceback, and
    the same for each exception chained to it (even a suppressed context)."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts += [str(exc), repr(exc), repr(exc.args), repr(getattr(exc, "detail", None)),
                  "".join(traceback.format_exception(exc))]
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


@pytest.fixture
def debug_logs(tmp_path, caplog):
    """DEBUG logging from every library into caplog and a log file."""
    caplog.set_level(logging.DEBUG)
    handler = logging.FileHandler(tmp_path / "debug.log", encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    yield caplog
    root.removeHandler(handler)
    handler.close()


@pytest.fixture
def canary_sim():
    with vnb.sim.running(assemblyai_key=AAI_KEY, openai_key=OAI_KEY,
                         processing_fixed=0.1) as sim:
        yield sim


def test_no_key_in_anything_the_python_api_leaves_behind(canary_sim, tmp_path, debug_logs,
                                                        capsys, samples, make_wav):
    sim, home = canary_sim, tmp_path / "home"
    fast = vnb.Settings(backoff=0.05, max_retries=1, read_timeout=5)
    wrong = fast.replace(assemblyai_api_key=WRONG_AAI, openai_api_key=WRONG_OAI)
    errors: list[BaseException] = []
    shown: list[str] = []

    def expect_error(call, *args, **kwargs):
        with pytest.raises(vnb.VoicenbError) as info:
            call(*args, **kwargs)
        errors.append(info.value)
        return info.value

    # speech to text, both services, one and many
    shown += [repr(vnb.transcribe(samples[0])), repr(vnb.transcribe(samples[1], backend="openai"))]
    shown += [repr(t) for t in vnb.transcribe_many([*samples, "missing.wav"], progress=False)]
    shown += [repr(vnb.AssemblyAI()), repr(vnb.Settings().resolved()), repr(fast), repr(wrong)]
    # answers: one question streamed, a conversation, speech
    shown += [repr(vnb.ask("What is the capital of France?", stream=True))]
    chat = vnb.Chat(system="Answer briefly.")
    chat.ask("One?")
    shown += [repr(chat), repr(chat.ask("Two?")), repr(chat.messages("Three?"))]
    shown += [repr(vnb.speak("Paris.", backend="openai", response_format="wav")),
              repr(vnb.speak("Paris.", backend="assemblyai"))]
    voice = vnb.tts.assemblyai.Voice(vnb.Settings().resolved())
    voice.generate("Paris. ")
    voice.flush()
    shown += [repr(voice)]
    voice.close()
    # sessions: a turn, a batch with failures, a retry, an interrupted turn resumed
    session = vnb.Session("canary", home=str(home), settings=fast)
    shown += [repr(session), repr(session.ask_audio(samples[0], stream=True))]
    sim.inject("500", "/v1/chat/completions", times=4)
    shown += [repr(t) for t in session.ask_many([*samples, "missing.wav"], progress=False)]
    sim.clear_faults()
    shown += [repr(t) for t in session.retry_failed(progress=False)]

    def stop(_token):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        session.ask_audio(samples[1], on_token=stop)
    shown += [repr(t) for t in session.resume(progress=False)]
    # the recorder widget, with a good recording and a silent one
    rec = session.recorder()
    rec.submit(samples[2])
    rec.submit(make_wav("silence.wav", 1.0, tone=False))
    assert rec.wait(60)
    shown += [repr(rec), rec.status, rec.transcript, rec.answer, repr(rec.turns)]
    # wrong keys: 401 from each service, raised, and recorded by a session
    expect_error(vnb.transcribe, samples[0], settings=wrong)
    expect_error(vnb.transcribe, samples[0], backend="openai", settings=wrong)
    expect_error(vnb.ask, "Hello?", settings=wrong)
    expect_error(vnb.speak, "Hello.", settings=wrong)  # AssemblyAI's, then OpenAI's
    expect_error(vnb.speak, "Hello.", backend="openai", settings=wrong)
    shown += [repr(t) for t in vnb.transcribe_many(samples, settings=wrong, progress=False)]
    bad = vnb.Session("wrong", home=str(home), settings=wrong)
    expect_error(bad.ask_audio, samples[0])
    shown += [repr(t) for t in bad.ask_many(samples, progress=False)]
    mixed = vnb.Session("mixed", home=str(home), settings=fast.replace(openai_api_key=WRONG_OAI))
    expect_error(mixed.ask_audio, samples[0])
    # other failures: rate limited after retries, timeouts, nothing listening
    sim.inject("429", "/v1/transcribe", times=10, retry_after=0)  # the Sync API
    expect_error(vnb.transcribe, samples[0], settings=fast)
    sim.inject("429", "/v2/upload", times=10, retry_after=0)
    expect_error(vnb.transcribe, samples[0], settings=fast.replace(assemblyai_api="async"))
    sim.inject("429", "/v1/chat/completions", times=10, retry_after=0)
    expect_error(vnb.ask, "Busy?", settings=fast.replace(max_retries=0))
    sim.inject("slow", "/v1/chat/completions", delay=3)
    expect_error(vnb.ask, "Slow?", settings=fast.replace(read_timeout=0.5, max_retries=0))
    closed = fast.replace(assemblyai_base_url="http://127.0.0.1:9",
                          openai_base_url="http://127.0.0.1:9/v1", max_retries=0)
    expect_error(vnb.transcribe, samples[0], settings=closed)
    expect_error(vnb.ask, "Anyone?", settings=closed)
    # speech to speech: a conversation with each service, and each refusing a wrong key
    from voicenb.live._driver import Driver, talk

    for backend in ("openai-realtime", "assemblyai-agent"):
        live = vnb.Session(f"s2s-{backend}", home=str(home), settings=fast)
        shown += [repr(Driver(live, backend)), repr(talk(live, backend, samples[:1], pace=4))]
        refused = vnb.Session(f"s2s-wrong-{backend}", home=str(home), settings=wrong)
        driver = Driver(refused, backend)
        shown += [repr(driver), repr(driver.conversation)]
        expect_error(driver.start)
    # exports and analysis
    df = vnb.load_history(str(home))
    df.to_csv(tmp_path / "export.csv", index=False)
    df.to_json(tmp_path / "export.json", orient="records", date_format="iso")
    summary = vnb.summary(df)
    shown += [repr(summary), summary._repr_html_(), df.to_string(), df._repr_html_()]

    assert len(df) >= 10 and {"ok", "error"} <= set(df["status"])
    assert "refused the API key" in " ".join(df["error"].dropna())
    for exc in errors:
        assert not leaks(error_texts(exc)), error_texts(exc)
    assert not leaks("\n".join(shown))
    out = capsys.readouterr()
    assert "(simulated answer)" in out.out and not leaks(out.out + out.err)
    records = debug_logs.records
    assert any(r.name.startswith("urllib3") for r in records)  # DEBUG was on
    assert any(r.name.startswith(("openai", "httpx", "httpcore")) for r in records)
    for record in records:
        assert not leaks(record.getMessage() + repr(record.__dict__)), record.getMessage()
    assert assert_no_key_in_files(tmp_path) >= 6  # history (+ WAL), audio, exports, log


# -- the command line ------------------------------------------------------------------------

DEBUG_CLI = ("import logging, sys; logging.basicConfig(level=logging.DEBUG); "
             "from voicenb.cli import main; sys.exit(main(sys.argv[1:]))")


def cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``voicenb ARGS`` in a new process with DEBUG logging to stderr."""
    return subprocess.run([sys.executable, "-c", DEBUG_CLI, *args], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)


def test_no_key_in_what_the_cli_prints_or_writes(canary_sim, tmp_path, samples):
    home, csv = str(tmp_path / "home"), str(tmp_path / "history.csv")
    runs = [
        cli("transcribe", *map(str, samples)),
        cli("transcribe", "--json", str(samples[0]), "missing.wav"),
        cli("ask", str(samples[0]), str(samples[1]), "--home", home, "--session", "cli"),
        cli("history", "--home", home),
        cli("history", "--home", home, "--csv", csv),
        cli("transcribe", str(samples[0]), ASSEMBLYAI_API_KEY=WRONG_AAI),
        cli("ask", str(samples[0]), "--home", home, OPENAI_API_KEY=WRONG_OAI),
        cli("ask", str(samples[0]), "--home", home, ASSEMBLYAI_API_KEY=WRONG_AAI),
    ]
    assert [r.returncode for r in runs] == [0, 1, 0, 0, 0, 1, 1, 1], [r.stderr for r in runs]
    assert "What is the capital of France?" in runs[0].stdout
    assert "refused the API key" in runs[5].stdout + runs[6].stdout
    assert "DEBUG" in runs[0].stderr  # the libraries' debug logs were on
    for run in runs:
        assert not leaks(run.stdout + run.stderr), run.args[3:] + [run.stdout, run.stderr]
    assert_no_key_in_files(tmp_path)


# -- a history on a PostgreSQL server: its password is a secret too -------------------------


def test_no_database_password_in_anything_a_shared_history_leaves_behind(
        canary_sim, tmp_path, samples, postgres_server, postgres_url, debug_logs, capsys):
    from urllib.parse import quote

    secrets = {postgres_server.password, quote(postgres_server.password, safe="")}
    wrong = postgres_url.replace(postgres_url.split(":")[2].split("@")[0], "WRONG-pw-x9")
    home = tmp_path / "home"
    settings = vnb.Settings(history_url=postgres_url)
    session = vnb.Session("team", home=str(home), settings=settings)
    shown = [repr(settings), repr(settings.resolved()), repr(session), repr(session.store),
             repr(session.ask_audio(samples[0])),
             repr(session.ask_many(samples[1:], progress=False))]
    exp = vnb.Experiment("x", audio=samples[:1], home=str(home), history=postgres_url,
                         variants={"a": {}})
    shown += [repr(exp), exp.run(progress=False).to_string(), exp.compare().to_string()]
    df = vnb.load_history(str(home), history=postgres_url)
    shown += [df.to_string(), df._repr_html_(), repr(vnb.summary(df)),
              vnb.show(df)._repr_html_()]
    errors = []
    for url in (wrong, postgres_url.replace(f":{postgres_server.port}/", ":9/")):
        with pytest.raises(vnb.VoicenbError) as info:
            vnb.Session("team", home=str(home), history=url)
        errors.append(error_texts(info.value))
    runs = [cli("history", "--history", postgres_url, "--home", str(home)),
            cli("history", "--history", wrong, "--home", str(home)),
            cli("ask", str(samples[0]), "--home", str(home), VOICENB_HISTORY_URL=postgres_url)]
    assert [r.returncode for r in runs] == [0, 2, 0], [r.stderr for r in runs]
    out = capsys.readouterr()
    everything = "\n".join(shown + errors + [out.out, out.err] +
                           [r.stdout + r.stderr for r in runs] +
                           [r.getMessage() + repr(r.__dict__) for r in debug_logs.records])
    assert "password authentication failed" in "\n".join(errors)
    assert not [s for s in secrets | {"WRONG-pw-x9"} if s in everything]
    for path in tmp_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [s for s in secrets if s.encode() in data], path
    # and the history itself: no column of any row holds it
    assert not [s for s in secrets if s in df.astype(str).to_string()]


# -- a notebook ------------------------------------------------------------------------------


def test_no_key_in_an_executed_notebook(canary_sim, tmp_path, samples, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    # The kernel gets the wrong keys from its environment, so that no cell's source has them.
    monkeypatch.setenv("CANARY_WRONG_AAI", WRONG_AAI)
    monkeypatch.setenv("CANARY_WRONG_OAI", WRONG_OAI)
    home, first, second = str(tmp_path / "home"), str(samples[0]), str(samples[1])
    cells = [
        "import logging, os, voicenb as vnb\nlogging.basicConfig(level=logging.DEBUG)",
        "vnb.Settings().resolved()",
        f"vnb.transcribe({first!r})",
        f"vnb.transcribe_many([{first!r}, {second!r}, 'missing.wav'])",
        "vnb.ask('What is the capital of France?', stream=True)",
        f"s = vnb.Session('nb', home={home!r})\ns.ask_audio({first!r}, stream=True)",
        f"rec = s.recorder()\nrec.submit({second!r})\nrec.wait(60)\nrec",
        "s.history",
        "vnb.summary(s.history)",
        f"vnb.transcribe({first!r}, api_key=os.environ['CANARY_WRONG_AAI'])",  # raises: 401
        "vnb.ask('Hello?', api_key=os.environ['CANARY_WRONG_OAI'])",           # raises: 401
        f"w = vnb.Session('w', home={home!r}, settings=vnb.Settings(\n"
        "    openai_api_key=os.environ['CANARY_WRONG_OAI']))\n"
        f"try:\n    w.ask_audio({first!r})\nexcept vnb.VoicenbError as e:\n"
        "    print(repr(e))\nw.history[['status', 'error']]",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    nbformat.write(nb, tmp_path / "run.ipynb")
    outputs = json.dumps([c.outputs for c in nb.cells], ensure_ascii=False)
    assert "What is the capital of France?" in outputs
    assert outputs.count("AuthenticationError") >= 3 and "DEBUG" in outputs
    for cell in nb.cells:
        assert not leaks(json.dumps(cell.outputs, ensure_ascii=False)), cell.source
    assert_no_key_in_files(tmp_path)  # the notebook file, the history, the audio


# -- keys pasted with stray characters ---------------------------------------------------------


@pytest.mark.parametrize("pasted", [AAI_KEY + "\n", f"  {AAI_KEY} ", AAI_KEY + "\r\n"])
def test_a_key_pasted_with_a_line_break_or_spaces_still_works(canary_sim, pasted, samples):
    # It used to raise a bare ValueError showing the key ("Invalid header value b'...\n'").
    settings = vnb.Settings(assemblyai_api_key=pasted, openai_api_key=f" {OAI_KEY}\n")
    assert vnb.transcribe(samples[0], settings=settings).text == "What is the capital of France?"
    assert vnb.transcribe(samples[0], backend="openai", settings=settings).ok
    assert vnb.ask("Hello?", settings=settings).text.startswith("(simulated answer)")


@pytest.mark.parametrize("field,service", [("assemblyai_api_key", "assemblyai"),
                                           ("openai_api_key", "openai")])
@pytest.mark.parametrize("bad", ["aai-CANARY-5f1e2d3c\n4b5a69788796a5b4",
                                 "aai-CANARY-5f1e2d3c\u20134b5a69788796a5b4", "   "])
def test_a_key_no_header_can_carry_is_a_config_error_that_does_not_show_it(
        canary_sim, samples, field, service, bad):
    settings = vnb.Settings(**{field: bad})
    with pytest.raises(vnb.ConfigError, match="API key") as info:
        vnb.transcribe(samples[0], backend=service, settings=settings)
    assert not leaks(error_texts(info.value)) and "5f1e2d3c" not in error_texts(info.value)
    assert canary_sim.stats["requests"] == 0
