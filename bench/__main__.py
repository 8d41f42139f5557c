"""``python -m bench``: run every benchmark and print its table.

``--quick`` runs tiny sizes (the test suite does this so the benchmarks never rot).
"""

from __future__ import annotations

import argparse
import datetime

from . import (batch, experiment, hearing, history_load, history_server, live_soak,
               llm_overhead, sync_api, talkback, turn_overhead, upload_memory, voice_agents)
from ._common import machine


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    args = parser.parse_args(argv)
    print(f"# voicenb benchmarks, {datetime.date.today()}, {machine()}\n")
    if args.quick:
        print(batch.report(batch.run(n=4, scenario="paid", seed_n=1)))
        print()
        print(upload_memory.report(upload_memory.run(size=4 << 20)))
        print()
        print(llm_overhead.report(llm_overhead.run(n=3)))
        print()
        print(history_load.report(history_load.run(n=1000, repeat=1)))
        print()
        print(history_server.report(history_server.run(quick=True)))  # PostgreSQL: ~10 s
        print()
        print(turn_overhead.report(turn_overhead.run(n=2)))
        print()
        print(sync_api.report(sync_api.run(n=2, fixed=0.3)))
        print()
        print(experiment.report(experiment.run(quick=True)))
        print()
        print(hearing.report(hearing.run(quick=True)))  # Whisper: ~20 s
        print()
        print(talkback.quick())  # real Chromium: two questions, ~30 s
        print()
        print(voice_agents.report(voice_agents.run(n=2, quick=True)))  # ~20 s
        print()
        print(live_soak.report(live_soak.run(6, (2.0, 5.0), baseline=3)))  # ~40 s
    else:
        print(batch.report(batch.run(n=100, scenario="paid")))
        print()
        print(batch.report(batch.run(n=100, scenario="free", seed_n=0)))
        print()
        print(upload_memory.report(upload_memory.run(size=1 << 30)))
        print()
        print(llm_overhead.report(llm_overhead.run()))
        print()
        print(history_load.report(history_load.run()))
        print()
        print(history_server.report(history_server.run()))
        print()
        print(turn_overhead.report(turn_overhead.run()))
        print()
        print(sync_api.report(sync_api.run()))
        print()
        print(experiment.report(experiment.run()))
        print()
        print(hearing.report(hearing.run()))
        print()
        print(voice_agents.report(voice_agents.run()))
        print()
        print(live_soak.report(live_soak.run()))  # ~15 min, at the pace people speak
        print()
        talkback.main([])


if __name__ == "__main__":
    main()
