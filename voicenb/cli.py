"""The voicenb command: talk to an LLM and keep every turn in a history.

  voicenb transcribe FILE... [--json]     one line (or JSON object) per file
  voicenb ask FILE... [--session NAME]    a turn per file: transcript, then the answer
  voicenb listen [--input FILE]           real time, turn by turn (microphone or a file)
  voicenb history [--session NAME]        the history (--csv PATH to export it)
                                          (--history URL: a team's PostgreSQL server)
  voicenb sim                             the local simulators (python -m voicenb.sim)

Data lives in VOICENB_HOME (default ./voicenb-data), the same folder make demo gives the
notebooks when run from the repository; the history in its history.sqlite unless --history
or VOICENB_HISTORY_URL names another (postgresql://user:password@host/db).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from ._errors import VoicenbError
from ._mic import microphone


def _transcribe(args: argparse.Namespace) -> int:
    from .stt import transcribe_many

    try:
        results = transcribe_many(args.files, concurrency=args.concurrency,
                                  progress=not args.quiet and sys.stderr.isatty())
    except VoicenbError as exc:  # configuration problems stop the whole run
        print(f"voicenb: {exc}", file=sys.stderr)
        return 2
    for t in results:
        if args.json:
            print(json.dumps({"file": t.source, **t.as_dict()}, ensure_ascii=False))
        elif t.ok:
            print(f"{t.source}\t{t.text}")
        else:
            print(f"{t.source}\tERROR: {t.error}")
    return 0 if all(t.ok for t in results) else 1


def _ask(args: argparse.Namespace) -> int:
    from .session import Session

    try:
        session = Session(args.session, home=args.home, history=args.history)
    except VoicenbError as exc:
        print(f"voicenb: {exc}", file=sys.stderr)
        return 2

    def on_status(turn: int, status: str) -> None:
        if status == "answering":  # the answer streams right after this line
            print(f"Me:  {session.turn(turn).transcript}")
            print("Bot: ", end="", flush=True)
        elif not args.quiet and status in ("uploading", "transcribing"):
            print(f"[turn {turn}: {status}]", file=sys.stderr)

    failed = 0
    for path in args.files:
        try:
            session.ask_audio(path, stream=True, on_status=on_status)
        except VoicenbError as exc:
            failed += 1
            print(f"ERROR ({path}): {exc}")
    return 1 if failed else 0


def _listen(args: argparse.Namespace) -> int:
    """Stream the microphone (or a file, at real-time pace) and answer each turn."""
    import queue
    import threading

    from .session import Session
    from .stt.streaming import RealtimeTranscriber

    try:
        session = Session(args.session, home=args.home, history=args.history)
        session.chat  # set up the model client now, not after the first turn
        mic = None if args.input else microphone(args.device)
        if args.input:
            from .audio import Audio

            pcm_source = Audio(args.input).pcm16k()
    except VoicenbError as exc:
        print(f"voicenb: {exc}", file=sys.stderr)
        return 2

    turns: queue.Queue = queue.Queue()
    rt = RealtimeTranscriber(on_turn=turns.put, settings=session.settings)
    finished = threading.Event()  # the file has been sent (never set for the microphone)
    failure: list[BaseException] = []
    try:
        rt.start()
        if mic is not None:
            mic.start(rt.send)
            print("Listening. Speak; Ctrl-C to stop.", file=sys.stderr)
        else:
            threading.Thread(target=_send_file, args=(rt, pcm_source, finished, failure),
                             name="voicenb-feed", daemon=True).start()
        _answer_each(session, turns, finished)
        if failure:
            raise failure[0]
        return 0
    except KeyboardInterrupt:
        return 130
    except VoicenbError as exc:
        print(f"voicenb: {exc}", file=sys.stderr)
        return 1
    finally:
        if mic is not None:
            mic.stop()
        try:
            rt.close()  # Terminate is always sent
        except VoicenbError:
            pass


def _send_file(rt: Any, pcm: bytes, finished: Any, failure: list[BaseException]) -> None:
    try:
        step = 3200 * 5  # hand it over in half seconds; the transcriber paces itself
        for i in range(0, len(pcm), step):
            rt.send(pcm[i:i + step])
        rt.close()
    except BaseException as exc:  # reported by the main thread
        failure.append(exc)
    finally:
        finished.set()


def _answer_each(session: Any, turns: Any, finished: Any) -> None:
    """Print and answer each final turn until the input has ended and all are answered."""
    import queue

    from .stt.streaming import BACKEND

    while not (finished.is_set() and turns.empty()):
        try:
            turn = turns.get(timeout=0.2)
        except queue.Empty:
            continue
        print(f"Me: {turn.text}", flush=True)
        print("Bot: ", end="", flush=True)
        try:
            session.ask_text(turn.text, audio=turn.audio, stt_backend=BACKEND,
                             stt_s=turn.stt_s, stream=True,
                             transcript_id=f"{turn.session_id}:{turn.turn_order}")
        except VoicenbError as exc:
            print(f"\nERROR: {exc}", flush=True)


def _history(args: argparse.Namespace) -> int:
    from .history import load_history

    try:
        df = load_history(args.home, args.session, history=args.history)
    except VoicenbError as exc:
        print(f"voicenb: {exc}", file=sys.stderr)
        return 2
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"wrote {len(df)} turns to {args.csv}")
        return 0
    if df.empty:
        print("no turns yet")
        return 0
    for row in df.itertuples():
        print(_history_line(row))
    return 0


def _history_line(row: Any, width: int = 100) -> str:
    """One turn on one line: when, status, seconds, and what was said (or the error)."""
    import pandas as pd

    from .history import ANSWERED

    when = "" if pd.isna(row.started_at) else row.started_at.strftime("%Y-%m-%d %H:%M:%S")
    seconds = "" if pd.isna(row.total_s) else f"{row.total_s:.1f}s"
    head = f"{row.session} #{row.turn}  {when}  {row.status:<5} {seconds:>6}  "
    if row.status in ANSWERED:
        said = f"{row.transcript} -> {row.answer}"
    else:
        said = "" if pd.isna(row.error) else str(row.error)
    said = " ".join(str(said).split())
    room = max(20, width - len(head))
    return head + (said if len(said) <= room else said[:room - 1] + "\u2026")


def _sim(args: argparse.Namespace) -> int:
    from .sim.__main__ import main as sim_main

    return sim_main(args.rest)


HOME_HELP = "data folder (default: VOICENB_HOME, else ./voicenb-data)"
HISTORY_HELP = ("where the history is: a SQLite file or postgresql://user:password@host/db "
                "(default: VOICENB_HISTORY_URL, else HOME/history.sqlite)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # `voicenb ... | head` closed the pipe: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="voicenb", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("transcribe", help="transcribe audio files, one line each")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_transcribe)
    p = sub.add_parser("ask", help="run a turn per audio file: transcribe, then ask the model")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--session", default="default", help="session name (default: default)")
    p.add_argument("--home", default=None, help=HOME_HELP)
    p.add_argument("--history", metavar="URL", default=None, help=HISTORY_HELP)
    p.add_argument("-q", "--quiet", action="store_true", help="no stage messages")
    p.set_defaults(func=_ask)
    p = sub.add_parser("listen", help="real time: answer each turn as you speak")
    p.add_argument("--input", metavar="FILE", default=None,
                   help="stream this audio file at real-time pace instead of the microphone")
    p.add_argument("--device", type=int, default=None, help="microphone device number")
    p.add_argument("--session", default="listen", help="session name (default: listen)")
    p.add_argument("--home", default=None, help=HOME_HELP)
    p.add_argument("--history", metavar="URL", default=None, help=HISTORY_HELP)
    p.set_defaults(func=_listen)
    p = sub.add_parser("history", help="print the history, or export it with --csv")
    p.add_argument("--session", default=None, help="only this session (default: all)")
    p.add_argument("--home", default=None, help=HOME_HELP)
    p.add_argument("--history", metavar="URL", default=None, help=HISTORY_HELP)
    p.add_argument("--csv", metavar="PATH", default=None,
                   help="write every column to this CSV file instead of printing")
    p.set_defaults(func=_history)
    p = sub.add_parser("sim", help="run the local service simulators (python -m voicenb.sim)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="options of python -m voicenb.sim")
    p.set_defaults(func=_sim)
    return parser


if __name__ == "__main__":
    sys.exit(main())
