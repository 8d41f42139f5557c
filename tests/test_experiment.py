"""Experiments: variants over the same clips, recorded as history rows, resumable without a
second call to either service (counted at the simulators), compared on WER, latency and cost."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import voicenb as vnb
from voicenb.accuracy import corpus_wer, word_errors
from voicenb.history import NAMES, TOP

pytestmark = pytest.mark.usefixtures("async_api")

SAMPLES = Path(vnb.sim.__file__).parent / "samples"
TEXTS = json.loads((SAMPLES / "samples.json").read_text())
VARIANTS = {
    "aai + mini": dict(stt="assemblyai", model="gpt-4o-mini"),
    "aai + terse": dict(stt="assemblyai", model="gpt-4o-mini", system="Answer in one sentence."),
    "openai + 4o": dict(stt="openai", model="gpt-4o"),
}


@pytest.fixture
def experiment(sim, tmp_path):
    def make(name: str = "exp", variants: dict | None = None, **kw) -> vnb.Experiment:
        kw.setdefault("audio", vnb.sim.samples())
        kw.setdefault("reference", SAMPLES / "samples.json")
        return vnb.Experiment(name, variants=VARIANTS if variants is None else variants, home=tmp_path / "data",
                              **kw)
    return make


def calls(sim) -> tuple[int, int, int]:
    """(AssemblyAI transcripts created, OpenAI transcriptions, chat completions)."""
    stats = sim.stats
    return len(sim.jobs), stats["audio_transcriptions"], stats["chat_completions"]


def test_every_clip_and_variant_is_a_history_row(experiment):
    df = experiment().run(progress=False)
    assert tuple(df.columns) == NAMES
    assert len(df) == 3 * 3
    assert df["variant"].tolist() == [v for v in VARIANTS for _ in range(3)]
    assert set(df["experiment"]) == {"exp"}
    assert set(df["session"]) == {f"exp/{v}" for v in VARIANTS}
    assert df["turn"].tolist() == [1, 2, 3] * 3
    assert (df["status"] == "ok").all(), df["error"].tolist()
    names = [Path(p).name for p in vnb.sim.samples()]
    assert df["reference"].tolist() == [TEXTS[n] for n in names] * 3
    assert df["transcript"].tolist() == df["reference"].tolist()  # the simulator is exact
    assert (df["wer"] == 0.0).all()
    assert df["stt_backend"].tolist() == ["assemblyai"] * 6 + ["openai"] * 3
    assert df["llm_model"].tolist() == ["gpt-4o-mini"] * 6 + ["gpt-4o"] * 3
    assert set(df["simulated"]) == {"stt+llm"}
    # and they are history rows like any other
    assert len(vnb.load_history(df["audio_path"].iloc[0].rsplit("/audio/", 1)[0],
                                experiment="exp")) == 9


def test_speech_to_text_shared_by_variants_runs_once_per_clip(experiment, sim):
    experiment().run(progress=False)
    # two AssemblyAI variants with the same options: 3 transcripts, not 6; OpenAI's: 3
    assert calls(sim) == (3, 3, 9)


def test_different_speech_options_are_not_shared(experiment, sim):
    experiment(variants={
        "plain": dict(stt="assemblyai"),
        "keyterms": dict(stt="assemblyai", stt_options={"word_boost": ["moon"]}),
    }).run(progress=False)
    assert calls(sim)[0] == 6


def test_a_second_run_calls_no_service(experiment, sim):
    exp = experiment()
    first = exp.run(progress=False)
    before = calls(sim)
    again = exp.run(progress=False)
    assert calls(sim) == before
    pd.testing.assert_frame_equal(first, again)


def test_a_rerun_redoes_only_the_answers_that_failed(experiment, sim):
    exp = experiment(variants={**VARIANTS, "openai + 4o": dict(stt="assemblyai",
                                                               model="gpt-4o")})
    sim.openai.credit = 4  # the fifth answer on: 429 insufficient_quota, never retried
    with pytest.warns(RuntimeWarning, match="5 of 9 turns"):
        df = exp.run(progress=False)
    assert (df["status"] == "ok").sum() == 4
    failed = df[df["status"] == "error"]
    assert failed["error"].str.contains("credit").all()
    assert failed["transcript"].notna().all()  # heard, then the answer failed
    transcripts, transcriptions, _ = calls(sim)
    answers = sim.stats["chat_completions"]
    sim.openai.credit = None
    df = exp.run(progress=False)
    assert (df["status"] == "ok").all()
    assert calls(sim)[:2] == (transcripts, transcriptions)  # nothing heard twice
    assert sim.stats["chat_completions"] == answers + 5  # only the five failed answers


def test_every_second_of_an_experiment_turn_is_in_a_named_stage(experiment):
    df = experiment().run(progress=False)
    parts = df[list(TOP)].astype(float).fillna(0).sum(axis=1)
    assert ((parts - df["total_s"]).abs() < 1e-6).all()
    assert (df["overhead_s"] >= 0).all() and (df["stt_s"] > 0).all()


def test_a_clip_that_is_not_audio_is_an_error_row_not_a_raise(experiment, tmp_path, sim):
    bad = tmp_path / "notes.wav"
    bad.write_bytes(b"not audio at all")
    clips = [vnb.sim.samples()[0], bad]
    with pytest.warns(RuntimeWarning, match="2 of 4 turns"):
        df = experiment(audio=clips, reference=None,
                        variants={"a": VARIANTS["aai + mini"], "b": VARIANTS["openai + 4o"]}
                        ).run(progress=False)
    assert df["status"].tolist() == ["ok", "error", "ok", "error"]
    assert df["error"].iloc[1].endswith("notes.wav' is not an audio file voicenb recognises "
                                         "(wav, webm, ogg, mp3, m4a, flac, aiff). Convert it, "
                                         "e.g. `ffmpeg -i in.xyz out.wav`.")
    assert df["audio_path"].iloc[1] == "notes.wav"


def test_a_silent_clip_is_an_error_row_without_a_request(experiment, make_wav, sim):
    silent = make_wav("silent.wav", tone=False)
    with pytest.warns(RuntimeWarning):
        df = experiment(audio=[silent], reference=None).run(progress=False)
    assert df["error"].str.startswith("No speech detected: the recording is silent").all()
    assert calls(sim) == (0, 0, 0)


def test_changing_a_clip_under_the_same_name_is_refused(experiment, tmp_path):
    experiment(audio=vnb.sim.samples()[:2]).run(progress=False)
    swapped = experiment(audio=vnb.sim.samples()[1:])
    with pytest.raises(vnb.ConfigError, match="already has a different clip 1"):
        swapped.run(progress=False)


def test_references_from_a_history_dataframe_are_matched_by_content(experiment, sim,
                                                                    tmp_path):
    session = vnb.Session("demo", home=tmp_path / "data")
    for clip in vnb.sim.samples():
        session.ask_audio(clip)
    history = vnb.load_history(tmp_path / "data", session="demo")  # sha256-named files
    exp = experiment(audio=history, variants={"mini": VARIANTS["aai + mini"]})
    assert [c.reference for c in exp.clips] == [TEXTS[p.name] for p in vnb.sim.samples()]


def test_references_as_a_list_or_a_column(experiment, sim, tmp_path):
    texts = ["one", None, "three"]
    assert [c.reference for c in experiment(reference=texts).clips] == texts
    with pytest.raises(vnb.ConfigError, match="3 texts for 2 clips"):
        experiment(audio=vnb.sim.samples()[:2], reference=texts)
    frame = pd.DataFrame({"audio_path": [str(p) for p in vnb.sim.samples()],
                          "said": ["a", "b", "c"]})
    assert [c.reference for c in experiment(audio=frame, reference="said").clips] == \
        ["a", "b", "c"]


def test_a_folder_of_clips(experiment):
    exp = experiment(audio=SAMPLES)
    assert [c.name for c in exp.clips] == sorted(p.name for p in SAMPLES.glob("*.wav"))


def test_bad_variants_say_what_a_variant_may_set(experiment):
    with pytest.raises(vnb.ConfigError, match="may set stt, model, system"):
        experiment(variants={"x": dict(temperature=0)})
    with pytest.raises(vnb.ConfigError, match="at least one variant"):
        experiment(variants={})
    with pytest.raises(vnb.ConfigError, match="prompt_template must contain"):
        experiment(variants={"x": dict(prompt_template="no placeholder")})


def test_compare_gives_corpus_wer_with_intervals_and_a_paired_difference(experiment, sim):
    sim.word_error_rate = 0.3
    exp = experiment()
    df = exp.run(progress=False)
    table = exp.compare(baseline="aai + mini")
    assert list(table.index) == list(VARIANTS)
    for variant, rows in df.groupby("variant"):
        errors = [word_errors(r, h) for r, h in zip(rows["reference"], rows["transcript"])]
        assert table.loc[variant, "wer"] == pytest.approx(corpus_wer(errors))
        assert table.loc[variant, "wer_low"] <= table.loc[variant, "wer"] \
            <= table.loc[variant, "wer_high"]
        assert table.loc[variant, "total_s p50"] == pytest.approx(rows["total_s"].median())
        assert table.loc[variant, "turns"] == 3 and table.loc[variant, "ok"] == 3
    # the two AssemblyAI variants share their transcripts: no difference at all
    assert table.loc["aai + terse", "wer_diff"] == 0.0
    assert table.loc["aai + mini", "wer_diff"] == 0.0
    diff = table.loc["openai + 4o"]
    assert diff["wer_diff"] == pytest.approx(diff["wer"] - table.loc["aai + mini", "wer"])
    assert diff["diff_low"] <= diff["wer_diff"] <= diff["diff_high"]
    assert set(table["simulated"]) == {"stt+llm"}
    with pytest.raises(vnb.ConfigError, match="not a variant"):
        exp.compare(baseline="nope")


def test_a_local_engine_is_not_labelled_simulated(experiment, sim):
    pytest.importorskip("pocketsphinx")
    exp = experiment(audio=vnb.sim.samples()[:1],
                     variants={"sphinx": dict(stt="sphinx", model="gpt-4o-mini")})
    df = exp.run(progress=False)
    assert df["simulated"].tolist() == ["llm"]
    assert df["stt_backend"].tolist() == ["sphinx"] and df["wer"].iloc[0] > 0
    assert exp.compare().loc["sphinx", "simulated"] == "llm"


def test_plot_puts_latency_and_wer_side_by_side(experiment):
    import matplotlib

    matplotlib.use("Agg")
    exp = experiment()
    exp.run(progress=False)
    fig = exp.plot()
    left, right = fig.axes
    assert [t.get_text() for t in right.get_xticklabels()] == \
        [f"{v}\n(simulated stt+llm)" for v in VARIANTS]
    assert "simulated" in fig._suptitle.get_text()
    assert len(right.patches) == 3


CHILD = """
import sys, voicenb as vnb
exp = vnb.Experiment("killed", audio=vnb.sim.samples(), home=sys.argv[1],
                     variants={"a": dict(stt="assemblyai"), "b": dict(stt="assemblyai",
                               system="Be brief.")})
exp.run(progress=False)
"""


def test_an_experiment_killed_mid_run_finishes_without_a_second_call(sim, tmp_path):
    sim.assemblyai.processing_fixed = 4.0  # the transcripts are still processing at the kill
    home = tmp_path / "data"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(home)],
                             env={**os.environ, "VOICENB_ASSEMBLYAI_API": "async"})
    deadline = time.monotonic() + 60
    while len(sim.jobs) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # the transcript ids reach the history right after submission
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert len(sim.jobs) == 3 and sim.stats["uploads"] == 3
    exp = vnb.Experiment("killed", audio=vnb.sim.samples(), home=home,
                         variants={"a": dict(stt="assemblyai"),
                                   "b": dict(stt="assemblyai", system="Be brief.")})
    df = exp.run(progress=False)
    assert (df["status"] == "ok").all(), df["error"].tolist()
    assert len(sim.jobs) == 3 and sim.stats["uploads"] == 3  # re-polled, not sent again
    assert sim.stats["chat_completions"] == 6
    assert not math.isnan(df["total_s"].max())


def test_a_reference_column_with_gaps_counts_them_as_unknown(experiment):
    exp = experiment(reference=["What is the capital of France?", float("nan"), None])
    df = exp.run(progress=False)
    assert df["reference"].isna().tolist() == [False, True, True] * 3
    assert df["wer"].notna().tolist() == [True, False, False] * 3
    with pytest.raises(vnb.ConfigError, match="must be the text that was said"):
        experiment(reference=[1, 2, 3])


def test_a_bad_price_file_is_said_before_anything_is_paid_for(experiment, sim, tmp_path):
    prices = tmp_path / "prices.json"
    prices.write_text('{"llm": {"gpt-4o-mini": {"input_per_mtok": 1.0}}}')
    bad = vnb.Settings(prices=str(prices))
    with pytest.raises(vnb.ConfigError, match="prices.json"):
        vnb.Experiment("p", audio=vnb.sim.samples(), variants=VARIANTS, settings=bad,
                       home=tmp_path / "data")
    with pytest.raises(vnb.ConfigError, match="prices.json"):
        vnb.Session("p", home=tmp_path / "data", settings=bad)
    assert calls(sim) == (0, 0, 0)


def test_a_variant_changed_under_its_name_is_refused(experiment, sim):
    experiment(variants={"m": dict(model="gpt-4o-mini")}).run(progress=False)
    with pytest.raises(vnb.ConfigError, match="Give the changed variant a new name"):
        experiment(variants={"m": dict(model="gpt-4o")}).run(progress=False)
    with pytest.raises(vnb.ConfigError, match="already ran as"):
        experiment(variants={"m": dict(model="gpt-4o-mini", stt="openai")}).run(progress=False)
    # a new variant beside it is fine, and the old one is not run again
    before = calls(sim)
    df = experiment(variants={"m": dict(model="gpt-4o-mini"),
                              "n": dict(model="gpt-4o")}).run(progress=False)
    assert (df["status"] == "ok").all() and calls(sim)[2] == before[2] + 3


def test_a_rerun_without_references_keeps_the_ones_recorded(experiment, sim):
    first = experiment().run(progress=False)
    again = experiment(reference=None).run(progress=False)
    assert again["reference"].tolist() == first["reference"].tolist()
    assert again["wer"].tolist() == first["wer"].tolist()


def test_an_option_the_backend_does_not_take_is_an_error_that_says_so(experiment, sim):
    with pytest.warns(RuntimeWarning):
        df = experiment(variants={"o": dict(stt="openai", stt_options={"word_boost": ["x"]})}
                        ).run(progress=False)
    assert (df["status"] == "error").all()
    assert df["error"].str.contains("word_boost").all()
    assert df["error"].str.contains("check its stt_options").all()


def test_compare_says_over_how_many_clips_each_wer_is(experiment, sim):
    sim.fail_audio(vnb.sim.samples()[2], "Audio too noisy")
    exp = experiment(variants={"aai": dict(stt="assemblyai"), "oai": dict(stt="openai")})
    with pytest.warns(RuntimeWarning):
        exp.run(progress=False)
    table = exp.compare(baseline="oai")
    assert table.loc["aai", "wer_clips"] == 2 and table.loc["oai", "wer_clips"] == 3


TWO = """
import sys, voicenb as vnb
exp = vnb.Experiment("both", audio=vnb.sim.samples(), home=sys.argv[1],
                     variants={"a": dict(stt="assemblyai"), "b": dict(stt="openai")})
exp.run(progress=False)
"""


def test_two_processes_running_one_experiment_do_each_pair_once(sim, tmp_path):
    home = tmp_path / "data"
    procs = [subprocess.Popen([sys.executable, "-W", "ignore", "-c", TWO, str(home)],
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    df = vnb.load_history(home, experiment="both")
    assert len(df) == 6 and (df["status"] == "ok").all(), df["error"].tolist()
    assert sim.stats["chat_completions"] == 6 and sim.stats["audio_transcriptions"] == 3
    assert len(sim.jobs) == 3 and sim.stats["uploads"] == 3


def test_each_turn_costs_its_speech_and_tokens_by_hand(experiment):
    exp = experiment(variants={"u2": dict(stt="assemblyai", model="gpt-4o-mini")},
                     settings=vnb.Settings(speech_models="universal-2"))
    df = exp.run(progress=False)
    assert (df["speech_model"] == "universal-2").all()
    # universal-2 $0.15 an hour; gpt-4o-mini $0.15 / $0.60 per million tokens in / out
    by_hand = (df["audio_s"] / 3600 * 0.15 + df["prompt_tokens"].astype(float) * 0.15e-6
               + df["completion_tokens"].astype(float) * 0.60e-6)
    assert df["cost_usd"].tolist() == pytest.approx(by_hand.tolist(), rel=1e-12)
    assert exp.compare().loc["u2", "cost_usd"] == pytest.approx(by_hand.sum())
