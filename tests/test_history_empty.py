"""The first view of a history, before anything is recorded, says so in one line; counts in
the summary read as counts."""

from __future__ import annotations

import re

import matplotlib
import pytest

import voicenb as vnb

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the headless backend

NO_TURNS = ("No turns yet: record a question (session.recorder()) or ask one "
            "(session.ask_text(...)), then run this again.")


@pytest.fixture
def empty(tmp_path):
    return vnb.load_history(tmp_path)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_the_summary_of_an_empty_history_is_one_line_saying_how_to_make_a_turn(empty):
    assert repr(vnb.summary(empty)) == NO_TURNS


def test_the_summary_of_an_empty_history_in_a_notebook_is_that_line_and_no_table(empty):
    assert vnb.summary(empty)._repr_html_() == f"<p>{NO_TURNS}</p>"


def test_a_session_with_no_turns_yet_says_so_though_others_have_some(sim, tmp_path):
    vnb.Session("other", home=tmp_path).ask_text("What is the capital of France?")
    assert repr(vnb.summary(vnb.Session("demo", home=tmp_path).history)) == NO_TURNS


def test_the_plot_of_an_empty_history_prints_the_line_and_draws_no_axes(empty, capsys):
    assert vnb.plot_latency(empty) is None
    assert capsys.readouterr().out == NO_TURNS + "\n"
    assert plt.get_fignums() == []


def test_the_plot_of_an_empty_history_on_your_axes_writes_the_line_there(empty):
    _, ax = plt.subplots()
    assert vnb.plot_latency(empty, ax=ax) is ax
    assert [t.get_text() for t in ax.texts] == [NO_TURNS] and not ax.axison


def test_counts_in_the_summary_print_as_integers(sim, tmp_path):
    session = vnb.Session("s", home=tmp_path)
    session.ask_text("What is the capital of France?")
    session.ask_text("And of Italy?")
    text = repr(vnb.summary(session.history))
    assert re.search(r"^turns priced +2$", text, re.MULTILINE), text
    assert re.search(r"^completion_tokens +\d+ ", text, re.MULTILINE), text
    assert not re.search(r"^turns priced +\d+\.\d", text, re.MULTILINE)


def test_the_count_of_priced_turns_is_an_int(sim, tmp_path):
    session = vnb.Session("s", home=tmp_path)
    session.ask_text("What is the capital of France?")
    priced = vnb.summary(session.history).cost["turns priced"]
    assert priced == 1 and isinstance(priced, int)
