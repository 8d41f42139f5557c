"""The ``voicenb`` command: ``voicenb transcribe FILE... [--json]``, ``voicenb sim``."""

from __future__ import annotations

import argparse
import json
import sys

from ._errors import VoicenbError


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


def _sim(args: argparse.Namespace) -> int:
    from .sim.__main__ import main as sim_main

    return sim_main(args.rest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voicenb", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("transcribe", help="transcribe audio files, one line each")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per file")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_transcribe)
    p = sub.add_parser("sim", help="run the local service simulators (python -m voicenb.sim)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_sim)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
