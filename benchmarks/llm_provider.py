"""The fake LLM provider in a process of its own, for benchmarks/llm.py: its CPU is the provider's, not the
family's (the bench measures the family's overhead, so the two must not share one event loop).

    python -m benchmarks.llm_provider TRUTHS.json --seed 23 --noise 0.04 --sharpness 1.8

Prints `ready <base url>` once listening; runs until stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from services.sim.llm import FakeLlm


async def main(args: argparse.Namespace, truths: dict[str, float]) -> None:
    fake = await FakeLlm(seed=args.seed, noise_sd=args.noise, sharpness=args.sharpness).start()
    for ticker, p in truths.items():
        fake.set_truth(ticker, p)
    print(f"ready {fake.url}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await fake.stop()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("truths")
    p.add_argument("--seed", type=int, default=23)
    p.add_argument("--noise", type=float, default=0.04)
    p.add_argument("--sharpness", type=float, default=1.8)
    parsed = p.parse_args()
    from libs.common.logs import configure_logging

    configure_logging("fake-llm", "WARNING", "console")
    with open(parsed.truths) as f:
        asyncio.run(main(parsed, json.load(f)))
