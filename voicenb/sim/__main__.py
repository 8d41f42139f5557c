"""``python -m voicenb.sim``: run the simulators until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
import time

from . import Simulator
from ._sockets import apply_fault, parse_fault

#: the websocket services a --socket-fault may name (Simulator.socket_faults)
SOCKET_SERVICES = ("streaming", "tts", "realtime", "agent")
from ._tts import SPEED as TTS_SPEED, TTFB_S as TTS_TTFB_S


def env_from_line(line: str) -> dict[str, str]:
    """The variables of the first line ``python -m voicenb.sim`` prints
    (``export NAME=value NAME=value ...``)."""
    if not line.startswith("export "):
        raise ValueError(f"not the simulator's export line: {line[:80]!r}")
    return dict(pair.split("=", 1) for pair in line.split()[1:])


def _read_faults(parser: argparse.ArgumentParser, specs: list[str]
                 ) -> list[tuple[str | None, dict]]:
    faults = []
    for spec in specs:
        try:
            service, plan = parse_fault(spec)
        except ValueError as exc:
            parser.error(f"--socket-fault: {exc}")
        if service not in (None, *SOCKET_SERVICES):
            parser.error(f"--socket-fault: unknown service {service!r}; choose from "
                         f"{', '.join(SOCKET_SERVICES)}")
        faults.append((service, plan))
    return faults


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m voicenb.sim",
                                     description="Run voicenb's local service simulators.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--processing-fixed", type=float, default=0.3,
                        help="seconds every transcript takes (default 0.3)")
    parser.add_argument("--processing-factor", type=float, default=0.05,
                        help="extra seconds per second of audio (default 0.05)")
    parser.add_argument("--concurrency", type=int, default=None,
                        help="jobs processed at once; the rest stay queued (default: no limit)")
    parser.add_argument("--upload-bandwidth", type=float, default=None,
                        help="bytes per second each upload is paced to (default: no limit)")
    parser.add_argument("--ttft", type=float, default=0.05,
                        help="seconds before the first token of an answer (default 0.05)")
    parser.add_argument("--token-rate", type=float, default=200.0,
                        help="answer tokens per second (default 200)")
    parser.add_argument("--sync-processing", type=float, default=0.134,
                        help="seconds the Sync API takes after a clip's last byte "
                             "(default 0.134, AssemblyAI's published figure)")
    parser.add_argument("--tts-ttfb", type=float, default=TTS_TTFB_S,
                        help="seconds from a text-to-speech request's text to its first audio "
                             f"(default {TTS_TTFB_S}, an assumption: AssemblyAI publishes none)")
    parser.add_argument("--tts-speed", type=float, default=TTS_SPEED,
                        help="seconds of speech generated per second (default "
                             f"{TTS_SPEED:g}; 0: as fast as it is made)")
    parser.add_argument("--fault-rate", type=float, default=0.0,
                        help="fraction of requests that fail at random (default 0)")
    parser.add_argument("--word-error-rate", type=float, default=0.0,
                        help="fraction of the words of known clips misheard, the same way "
                             "each time (default 0: their text exactly)")
    parser.add_argument("--no-hear", dest="hear", action="store_false",
                        help="give audio it does not know a placeholder transcript instead "
                             "of transcribing it on this machine (Whisper tiny.en, or pocketsphinx)")
    parser.add_argument("--socket-fault", action="append", default=[], metavar="SPEC",
                        help="fail websocket sessions on demand (repeatable): "
                             "[service:]kind[=value][@N(s|f)][xTIMES][,refuse=S], kind one of "
                             "drop (cut, no close frame), close=CODE, stall=SECONDS, "
                             "refuse=SECONDS; service one of streaming, tts, realtime, agent "
                             "(default: all). E.g. drop@5s, streaming:close=1011@40f, "
                             "drop@2s,refuse=3, drop@5-20s (each session, at random)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random faults (default 0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    faults = _read_faults(parser, args.socket_fault)
    if not 0.0 <= args.word_error_rate <= 1.0:
        parser.error(f"--word-error-rate must be between 0 and 1, not {args.word_error_rate}")
    sim = Simulator(host=args.host, port=args.port, processing_fixed=args.processing_fixed,
                    processing_factor=args.processing_factor, concurrency=args.concurrency,
                    upload_bandwidth=args.upload_bandwidth, ttft=args.ttft,
                    token_rate=args.token_rate, fault_rate=args.fault_rate,
                    hear=args.hear, sync_processing_s=args.sync_processing,
                    word_error_rate=args.word_error_rate, tts_ttfb=args.tts_ttfb,
                    tts_speed=args.tts_speed or None, seed=args.seed).start()
    for service, plan in faults:
        for name, target in sim.socket_faults.items():
            if service in (None, name):
                apply_fault(target, plan, seed=args.seed)
    # One line a shell can eval, first, on stdout; the words for people on stderr.
    print("export " + " ".join(f"{name}={value}" for name, value in sim.env().items()),
          flush=True)
    print(f"voicenb simulators listening on {sim.url} (simulated answers, no real service).\n"
          "Point voicenb or the vendors' SDKs at them with the line above, e.g.\n"
          "  python -m voicenb.sim > sim.env &  then  eval \"$(head -n 1 sim.env)\"",
          file=sys.stderr, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
