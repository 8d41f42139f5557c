"""Turns as a table you can listen to: :func:`show`.

>>> vnb.show(session.history.tail(5))                 # doctest: +SKIP
>>> vnb.show(exp.results())                           # variants side by side, per clip

Every transcript, answer, reference and error is escaped before it becomes HTML; the audio is
embedded in the page (base64), so the table plays from a saved notebook too.
"""

from __future__ import annotations

import base64
import html
from typing import Any

import pandas as pd

from ._errors import ConfigError

__all__ = ["show", "TurnTable"]

#: rows shown at most unless max_rows= says otherwise (each embeds its clip)
MAX_ROWS = 50
_MIME = {".wav": "audio/wav", ".webm": "audio/webm", ".ogg": "audio/ogg", ".opus": "audio/ogg",
         ".mp3": "audio/mpeg", ".m4a": "audio/mp4", ".flac": "audio/flac",
         ".aiff": "audio/aiff", ".aif": "audio/aiff"}
_STYLE = ("<style>.vnb-turns td{vertical-align:top;text-align:left;max-width:28em}"
          ".vnb-turns .vnb-text{max-height:9em;overflow:auto;white-space:pre-wrap}"
          ".vnb-turns .vnb-meta{color:#666;font-size:85%}"
          ".vnb-turns .vnb-error{color:#b00020}</style>")


def show(df: pd.DataFrame, *, max_rows: int = MAX_ROWS) -> TurnTable:
    """A turns table with an audio player per clip: history rows (``session.history``,
    ``vnb.load_history()``), or an experiment's rows with the variants side by side for
    each clip. Displays itself in a notebook; prints as text elsewhere."""
    if not isinstance(df, pd.DataFrame) or "audio_path" not in df.columns:
        raise ConfigError("vnb.show takes history rows (session.history, vnb.load_history() "
                          "or Experiment.results()), e.g. vnb.show(df.head(10)).")
    return TurnTable(df, max_rows=max_rows)


class TurnTable:
    """What :func:`show` returns: ``_repr_html_`` for notebooks, ``repr`` for terminals."""

    def __init__(self, df: pd.DataFrame, *, max_rows: int = MAX_ROWS) -> None:
        variants = df["variant"].dropna().unique() if "variant" in df.columns else []
        #: one row per clip with a column per variant, when the rows are several variants'
        self.side_by_side = len(variants) > 1
        if self.side_by_side:  # max_rows clips, each with all its variants
            self.key = ("audio_sha256" if "audio_sha256" in df.columns
                        and df["audio_sha256"].notna().all() else "turn")
            clips = list(dict.fromkeys(df[self.key]))
            self.total = len(clips)
            self.df = df[df[self.key].isin(clips[:max_rows])]
        else:
            self.total, self.df = len(df), df.head(max_rows)

    def __repr__(self) -> str:
        cols = [c for c in ("variant", "session", "turn", "status", "transcript", "answer",
                            "wer", "total_s", "cost_usd") if c in self.df.columns]
        return self.df[cols].to_string(max_colwidth=40) + self._more(text=True)

    def _more(self, text: bool = False) -> str:
        shown = self.df[self.key].nunique() if self.side_by_side else len(self.df)
        if self.total <= shown:
            return ""
        what = "clips" if self.side_by_side else "rows"
        note = (f"showing {shown} of {self.total} {what}: pass a slice of the rows or "
                "max_rows= for others")
        return f"\n({note})" if text else f"<p class='vnb-meta'>{note}</p>"

    def _repr_html_(self) -> str:
        body = self._clips() if self.side_by_side else self._turns()
        return f"{_STYLE}<table class='vnb-turns'>{body}</table>{self._more()}"

    def _turns(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("turn", "audio", "transcript", "answer",
                                                 "figures"))
        rows = []
        for _, row in self.df.iterrows():
            name = f"{_get(row, 'session') or ''} #{_get(row, 'turn') or ''}"
            rows.append(f"<tr><td>{_esc(name)}<div class='vnb-meta'>"
                        f"{_esc(_get(row, 'status'))}</div></td><td>{_player(row)}</td>"
                        f"<td>{_text(row, 'transcript')}</td><td>{_answer(row)}</td>"
                        f"<td>{_figures(row)}</td></tr>")
        return f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"

    def _clips(self) -> str:
        variants = list(dict.fromkeys(self.df["variant"].dropna()))
        key = self.key
        head = "<th>clip</th><th>audio</th><th>reference</th>" + "".join(
            f"<th>{_esc(v)}</th>" for v in variants)
        rows = []
        for _, clip in self.df.groupby(key, sort=False):
            first = clip.iloc[0]
            cells = []
            for v in variants:
                match = clip[clip["variant"] == v]
                cells.append(f"<td>{_variant_cell(match.iloc[0])}</td>" if len(match)
                             else "<td></td>")
            rows.append(f"<tr><td>#{_esc(_get(first, 'turn'))}</td><td>{_player(first)}</td>"
                        f"<td>{_text(first, 'reference')}</td>{''.join(cells)}</tr>")
        return f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody>"


def _get(row: pd.Series, name: str) -> Any:
    value = row.get(name)
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value


def _esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _text(row: pd.Series, name: str) -> str:
    return f"<div class='vnb-text'>{_esc(_get(row, name))}</div>"


def _answer(row: pd.Series) -> str:
    error = _get(row, "error")
    if error and _get(row, "status") != "ok":
        return f"<div class='vnb-text vnb-error'>{_esc(error)}</div>"
    return _text(row, "answer")


def _figures(row: pd.Series) -> str:
    parts = []
    for name, fmt in (("wer", "WER {:.1%}"), ("total_s", "{:.2f} s"), ("stt_s", "speech {:.2f} s"),
                      ("llm_s", "answer {:.2f} s"), ("cost_usd", "${:.5f}")):
        value = _get(row, name)
        if value is not None:
            parts.append(fmt.format(float(value)))
    if _get(row, "simulated"):
        parts.append(f"simulated {_get(row, 'simulated')}")
    return "<div class='vnb-meta'>" + "<br>".join(_esc(p) for p in parts) + "</div>"


def _variant_cell(row: pd.Series) -> str:
    return (f"<div class='vnb-meta'>heard</div>{_text(row, 'transcript')}"
            f"<div class='vnb-meta'>answered</div>{_answer(row)}{_figures(row)}")


def _player(row: pd.Series) -> str:
    path = _get(row, "audio_path")
    from ._store import fetch_missing

    file = fetch_missing(path) if path else None  # a shared history's audio is fetched
    if file is None:
        return "<span class='vnb-meta'>no audio</span>"
    data = base64.b64encode(file.read_bytes()).decode("ascii")
    mime = _MIME.get(file.suffix.lower(), "audio/wav")
    return f"<audio controls preload='metadata' src='data:{mime};base64,{data}'></audio>"
