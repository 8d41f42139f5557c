"""What voicenb adds to an answer's latency: vnb.ask vs the bare openai SDK, same simulator.

The simulator waits ``ttft`` before the first token and streams ``token_rate`` tokens a
second; overhead is what each client measures beyond that.
"""

from __future__ import annotations

import statistics
import time

import voicenb as vnb

from ._common import table


def run(n: int = 20, ttft: float = 0.2, token_rate: float = 100.0) -> dict:
    import openai

    out: dict = {"n": n, "ttft": ttft, "token_rate": token_rate}
    with vnb.sim.running(ttft=ttft, token_rate=token_rate):
        vnb.ask("warm up")
        sdk = openai.OpenAI(max_retries=0)
        v_ttft, v_total, s_ttft, s_total = [], [], [], []
        for i in range(n):
            a = vnb.ask(f"question {i}")
            expected = ttft + (a.completion_tokens - 1) / token_rate
            v_ttft.append(a.ttft_s - ttft)
            v_total.append(a.llm_s - expected)

            t0 = time.monotonic()
            first = None
            stream = sdk.chat.completions.create(
                model="gpt-5.4-mini", messages=[{"role": "user", "content": f"question {i}"}],
                stream=True, stream_options={"include_usage": True})
            tokens = 0
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    tokens += 1
                    first = first or time.monotonic() - t0
            s_ttft.append(first - ttft)
            s_total.append(time.monotonic() - t0 - (ttft + (tokens - 1) / token_rate))
    out.update(v_ttft=statistics.median(v_ttft), v_total=statistics.median(v_total),
               s_ttft=statistics.median(s_ttft), s_total=statistics.median(s_total))
    return out


def report(r: dict) -> str:
    ms = 1000
    return table([
        ("measure", "value"),
        (f"answer overhead beyond the simulated delays, median of {r['n']}: "
         "vnb.ask ttft / llm_s",
         f"{r['v_ttft'] * ms:.1f} ms / {r['v_total'] * ms:.1f} ms"),
        ("bare openai SDK stream ttft / whole", f"{r['s_ttft'] * ms:.1f} ms / "
                                                f"{r['s_total'] * ms:.1f} ms"),
        ("ratio vnb.ask / SDK (whole-call overhead)",
         f"{r['v_total'] / r['s_total']:.2f}" if r["s_total"] > 0 else "n/a"),
    ])


if __name__ == "__main__":
    print(report(run()))
