"""Experiments: the same clips through several variants (speech-to-text backend, model,
system prompt, prompt template), compared on accuracy, latency and cost.

>>> exp = vnb.Experiment("models", audio=vnb.sim.samples(),            # doctest: +SKIP
...                      reference="notebooks/samples/samples.json",
...                      variants={"mini": dict(model="gpt-4o-mini"),
...                                "4o": dict(model="gpt-4o")})
>>> exp.run(); exp.compare(baseline="mini")                              # doctest: +SKIP

Every (clip, variant) pair is a history row (``experiment``, ``variant`` set; the session is
``"<experiment>/<variant>"``, turn = the clip's position), written before any request, so a
rerun finishes what failed or was interrupted and redoes nothing that succeeded. Each clip is
asked on its own, without conversation memory, so that variants compare on equal terms.
"""

from __future__ import annotations

import warnings
from typing import Any

import pandas as pd

from ._config import Settings, resolve
from ._errors import ConfigError
from ._experiment import Runner, attach_references, clips_of, simulated, variants_of
from .accuracy import Errors, bootstrap_wer, corpus_wer, paired_difference, word_errors
from .history import HistoryStore

__all__ = ["Experiment"]

#: the latency columns compare() gives the median and 90th percentile of
#: first_audio_s: end of speech -> the answer's first audio (speech-to-speech variants)
STAGES = ("stt_s", "ttft_s", "llm_s", "first_audio_s", "total_s")


class Experiment:
    """Variants over the same clips; :meth:`run` records them, :meth:`compare` and
    :meth:`plot` put them side by side.

    ``audio``: a history DataFrame (its rows with audio), a folder, or a list of clips.
    ``reference``: what was said in each clip, for word error rates: a JSON file or dict
    ``{file: text}`` (matched by content, then file name), a list in clip order, or a column
    of the ``audio`` DataFrame. ``variants``: ``{name: dict(stt=, model=, system=,
    prompt_template=, stt_options=)}``, or a speech-to-speech service as
    ``dict(live="openai-realtime" | "assemblyai-agent", model=, system=, voice=)`` (each clip
    is said into a conversation at real-time pace; ``live="cascade"`` is the default
    pipeline); what a variant leaves out comes from ``settings``
    and the environment, as for :class:`~voicenb.Session`. ``history``: where the rows go (a
    SQLite file or ``postgresql://...``; default ``<home>/history.sqlite``).
    """

    def __init__(self, name: str, audio: Any, reference: Any = None,
                 variants: dict[str, dict[str, Any]] | None = None, *,
                 home: str | None = None, history: str | None = None,
                 settings: Settings | None = None) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("An experiment needs a name, e.g. Experiment('stt-and-models', "
                              "audio=..., variants=...).")
        self.name = name
        self.settings = resolve(settings, home=home, history_url=history)
        self.clips = clips_of(audio)
        attach_references(self.clips, reference, audio)
        self._with_reference = reference is not None
        self.variants = variants_of(name, variants, settings, home)
        self.store = HistoryStore(self.settings.home, settings=self.settings)

    def __repr__(self) -> str:
        return (f"Experiment({self.name!r}, {len(self.clips)} clips x "
                f"{len(self.variants)} variants: {', '.join(v.name for v in self.variants)})")

    def run(self, *, concurrency: int = 32, llm_concurrency: int = 16,
            live_concurrency: int = 4, progress: bool = True) -> pd.DataFrame:
        """Run every (clip, variant) pair not done yet; return :meth:`results`.

        Speech-to-text runs ``concurrency`` clips at once per backend, answers
        ``llm_concurrency`` at once, and a speech-to-speech variant (``live=``) says
        ``live_concurrency`` clips at once, each into a conversation of its own at real-time
        pace; one progress bar counts the pairs. A failed pair is an
        error row, never a raise; running again retries only those.
        """
        for variant in self.variants:
            variant.simulated = simulated(variant)
        runner = Runner(self.store, self.name, self.clips, self.variants,
                        concurrency=concurrency, llm_concurrency=llm_concurrency,
                        progress=progress, with_reference=self._with_reference,
                        live_concurrency=live_concurrency)
        runner.run()
        for why in runner.unpriced:
            warnings.warn(why, RuntimeWarning, stacklevel=2)
        df = self.results()
        failed = df[df["status"] != "ok"]
        if len(failed):
            first = failed["error"].dropna()
            warnings.warn(
                f"{len(failed)} of {len(df)} turns of experiment {self.name!r} did not finish"
                + (f" (e.g. {first.iloc[0]})" if len(first) else "") + ". The rows say why "
                "(status, error); run() again retries only those.", RuntimeWarning,
                stacklevel=2)
        return df

    def results(self) -> pd.DataFrame:
        """The experiment's rows (history columns), variant by variant in clip order."""
        df = self.store.dataframe(experiment=self.name)
        order = {v.name: i for i, v in enumerate(self.variants)}
        df = df[df["variant"].isin(list(order))]
        df = df.assign(_v=df["variant"].map(order)).sort_values(["_v", "turn"])
        return df.drop(columns="_v").reset_index(drop=True)

    def compare(self, baseline: str | None = None, *, level: float = 0.95) -> pd.DataFrame:
        """One row per variant: turns and errors, corpus WER with its bootstrap interval
        over the clips it heard (``wer_clips``; with ``baseline``, the paired difference
        from that variant over the clips both heard), the median and 90th percentile of each
        stage, tokens and cost (``cost_usd`` prices each turn as if run on its own; unknown
        when any turn's price is)."""
        return compare(self.results(), [v.name for v in self.variants], baseline, level)

    def plot(self) -> Any:
        """Latency (each variant's spread of total_s) and WER with its interval, side by
        side; simulated services are named in the labels. Returns the matplotlib Figure."""
        return plot(self.compare(), self.results())


def _errors(rows: pd.DataFrame) -> dict[int, Errors]:
    """Clip turn -> word errors, for the rows with a reference and a transcript."""
    ok = rows[rows["reference"].notna() & rows["transcript"].notna()]
    return {int(t): word_errors(r, h) for t, r, h in zip(ok["turn"], ok["reference"],
                                                        ok["transcript"])}


def compare(df: pd.DataFrame, variants: list[str], baseline: str | None,
            level: float = 0.95) -> pd.DataFrame:
    if baseline is not None and baseline not in variants:
        raise ConfigError(f"baseline={baseline!r} is not a variant of this experiment: "
                          f"choose one of {variants}.")
    errors = {v: _errors(df[df["variant"] == v]) for v in variants}
    out = []
    for v in variants:
        rows = df[df["variant"] == v]
        e = list(errors[v].values())
        interval = bootstrap_wer(e, level) if e else None
        line: dict[str, Any] = {
            "variant": v,
            "simulated": ", ".join(sorted(set(rows["simulated"].dropna()))) or None,
            "live": ", ".join(sorted(set(rows["live_backend"].dropna()))) or None,
            "turns": len(rows), "ok": int((rows["status"] == "ok").sum()),
            "wer": corpus_wer(e) if e else None,
            "wer_clips": len(e),
            "wer_low": interval[0] if interval else None,
            "wer_high": interval[1] if interval else None,
        }
        if baseline is not None:
            line.update(_paired(errors[v], errors[baseline], level))
        for stage in STAGES:
            line[f"{stage} p50"] = rows[stage].quantile(0.5)
            line[f"{stage} p90"] = rows[stage].quantile(0.9)
        line.update(prompt_tokens=rows["prompt_tokens"].sum(),
                    completion_tokens=rows["completion_tokens"].sum(),
                    # unknown when any turn's price is (never a partial sum)
                    cost_usd=rows["cost_usd"].sum() if rows["cost_usd"].notna().all()
                    and len(rows) else None,
                    cost_per_turn=rows["cost_usd"].mean())
        out.append(line)
    table = pd.DataFrame(out).set_index("variant")
    for col in ("wer", "wer_low", "wer_high", "wer_diff", "diff_low", "diff_high"):
        if col in table:
            table[col] = table[col].astype("float64")
    return table


def _paired(errors: dict[int, Errors], baseline: dict[int, Errors],
            level: float) -> dict[str, float | None]:
    both = sorted(set(errors) & set(baseline))
    result = paired_difference([errors[t] for t in both], [baseline[t] for t in both],
                               level) if both else None
    if result is None:
        return {"wer_diff": None, "diff_low": None, "diff_high": None}
    diff, (low, high) = result
    return {"wer_diff": diff, "diff_low": low, "diff_high": high}


def _label(variant: str, sim: Any) -> str:
    return f"{variant}\n(simulated {sim})" if isinstance(sim, str) and sim else variant


def plot(table: pd.DataFrame, df: pd.DataFrame) -> Any:
    import matplotlib.pyplot as plt

    n = len(table)
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(9.0, 2.2 * n + 3), 4.2))
    labels = [_label(v, s) for v, s in zip(table.index, table["simulated"])]
    spreads = [df.loc[(df["variant"] == v) & df["total_s"].notna(), "total_s"].astype(float)
               for v in table.index]
    left.boxplot([s.tolist() or [float("nan")] for s in spreads], positions=range(n))
    left.set_xticks(range(n), labels, fontsize="small")
    left.set_ylabel("seconds per turn (total_s)")
    left.set_title("latency")
    wer = table["wer"].astype(float)
    low = (wer - table["wer_low"].astype(float)).clip(lower=0).fillna(0)
    high = (table["wer_high"].astype(float) - wer).clip(lower=0).fillna(0)
    right.bar(range(n), wer.fillna(0), yerr=[low, high], capsize=4)
    right.set_xticks(range(n), labels, fontsize="small")
    right.set_ylabel("word error rate (corpus, 95% interval)")
    right.set_title("accuracy" if wer.notna().any() else "accuracy (no reference texts)")
    if table["simulated"].notna().any():
        fig.suptitle("Figures marked 'simulated' come from voicenb's simulators, not the "
                     "real services", fontsize="small")
    fig.tight_layout()
    return fig
