"""vnb.show: a turns table with a player per clip, every text escaped; an experiment's rows
with the variants side by side for each clip."""

from __future__ import annotations

import base64
import re

import pytest

import voicenb as vnb


@pytest.fixture
def session(sim, tmp_path):
    return vnb.Session("shown", home=tmp_path / "data")


def test_each_turn_has_a_player_of_its_own_audio(session, samples):
    session.ask_many(samples, progress=False)
    page = vnb.show(session.history)._repr_html_()
    players = re.findall(r"<audio controls preload='metadata' src='data:audio/wav;base64,([^']+)'",
                         page)
    assert len(players) == 3
    assert [base64.b64decode(p) for p in players] == [s.read_bytes() for s in samples]
    assert "What is the capital of France?" in page


def test_transcripts_answers_and_errors_are_escaped(session):
    session.ask_text("<script>alert('x')</script> & <b>bold</b>")
    with pytest.raises(vnb.AudioError):
        session.ask_audio(b"<img src=x onerror=alert(1)>")
    page = vnb.show(session.history)._repr_html_()
    assert "<script>" not in page and "<b>bold</b>" not in page and "<img" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;" \
        in page
    assert "no audio" in page  # the typed turn


def test_a_long_history_shows_its_first_rows_and_says_so(session):
    for i in range(4):
        session.ask_text(f"question {i}")
    table = vnb.show(session.history, max_rows=2)
    assert table._repr_html_().count("<tr>") == 3  # the header and two turns
    assert "showing 2 of 4 rows" in table._repr_html_() and "showing 2 of 4" in repr(table)


def test_an_experiment_shows_variants_side_by_side_per_clip(sim, tmp_path, samples):
    exp = vnb.Experiment("side", audio=samples, home=tmp_path / "data",
                         reference=[f"ref {i}" for i in range(3)],
                         variants={"a": dict(model="gpt-4o-mini"), "b": dict(model="gpt-4o")})
    df = exp.run(progress=False)
    page = vnb.show(df)._repr_html_()
    assert page.count("<audio ") == 3  # one player per clip, not per row
    assert re.findall(r"<th>([^<]*)</th>", page) == ["clip", "audio", "reference", "a", "b"]
    assert page.count("<tr>") == 4
    assert "ref 0" in page and "WER" in page and "simulated stt+llm" in page
    two = vnb.show(df, max_rows=2)._repr_html_()  # two clips, each with all its variants
    assert two.count("<audio ") == 2 and "showing 2 of 3 clips" in two
    assert two.count("answered") == 4


def test_show_refuses_what_is_not_history():
    import pandas as pd

    with pytest.raises(vnb.ConfigError, match="takes history rows"):
        vnb.show(pd.DataFrame({"a": [1]}))
