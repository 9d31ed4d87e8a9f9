"""Decisions per second on one core: JSON bytes in -> validated -> evaluated -> decision JSON out.

Run: `.venv/bin/python bench/evaluate.py [--pupils N] [--flows N] [--seconds S] [--rounds R]`. Prints the best
and median of each stage over interleaved rounds; the target is >= 50,000 decisions/s for realistic
single-subject flows, JSON in to JSON out: bytes -> parse_flow (full validation) -> judged against the state
as of the flow's time -> decision JSON bytes. The headline (last line) is `decide_json`, the fastest correct
path: byte for byte `evaluate(...).to_json_bytes()` (tests/unit/streams/test_render.py), but a single-subject
decision is written from pre-rendered fragments without building a `Decision`. The lines before it are the
path through a `Decision` object (what the stream worker and replay use), serialised by the compiled serializer
(`to_json_bytes`) or by `model_dump_json().encode()`. The "ceiling" line parses and serialises a ready
`Decision` without evaluating.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from schemas.events import parse_event, parse_flow  # noqa: E402
from schemas.policy import load_policy  # noqa: E402
from streams import builders as b  # noqa: E402
from streams.evaluate import decide_json, evaluate  # noqa: E402
from streams.state import State  # noqa: E402

# (recipient, purpose, categories, channel): the everyday single-subject flows of a school.
TEMPLATES = [
    ("sims", "mis_sync", ["identity", "attendance"], "encrypted_api"),
    ("parentpay", "parent_payments", ["identity.name", "parent_contact", "financial"], "encrypted_api"),
    ("peripatetic-music", "music_tuition", ["identity", "contact"], "encrypted_email"),
    ("trust-website", "promotional_photo", ["photographs", "identity.name"], "encrypted_portal"),
    ("meal-provider", "school_meals", ["identity.name", "health.allergy"], "encrypted_portal"),
    ("edtech-software", "edtech", ["identity.name", "edtech_account"], "encrypted_api"),
    ("local-authority", "safeguarding", ["identity", "safeguarding"], "encrypted_email"),
    ("quizcloud", "edtech", ["identity.name", "edtech_account"], "encrypted_api"),
]


def typical_facts(pupil: str, rnd: random.Random) -> list[object]:
    """A pupil's usual facts: birth date, enrolment, one parent with PR, two or three consents."""
    year = rnd.randint(2007, 2020)
    facts: list[object] = [
        b.born(pupil, f"{year}-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"),
        b.enrolled("2024-09-04T08:00Z", pupil, rnd.choice(["hawthorn-primary", "rose-valley"])),
        b.standing("2024-09-04T08:00Z", pupil, f"parent-{pupil}", "mother", pr=True),
        b.consent(
            "2024-09-05T18:00Z",
            pupil,
            None,
            "promotional_photo",
            ["photographs", "identity.name"],
            recipient_class="publication",
            by=f"parent-{pupil}",
        ),
        b.consent(
            "2024-09-05T18:00Z",
            pupil,
            "peripatetic-music",
            "music_tuition",
            ["identity", "contact"],
            by=f"parent-{pupil}",
        ),
    ]
    if rnd.random() < 0.3:
        facts.append(b.withdrawal("2025-01-10T12:00Z", pupil, recipient="peripatetic-music", by=f"parent-{pupil}"))
    return facts


def build(pupils: int, flows: int, seed: int = 7, cache_size: int | None = None) -> tuple[State, list[bytes]]:
    """A state with `pupils` pupils and `flows` distinct flow payloads about them."""
    rnd = random.Random(seed)
    state = State(cache_size=pupils if cache_size is None else cache_size)
    for recipient in ("sims", "parentpay", "meal-provider", "edtech-software", "quizcloud"):
        state.apply(b.agreement("2019-01-01T00:00Z", recipient, valid_until="2030-12-31T00:00Z"))
    state.apply(b.agreement("2019-01-01T00:00Z", "peripatetic-music", "dsa", valid_until="2030-12-31T00:00Z"))
    for n in range(pupils):
        for fact in typical_facts(f"pupil-{n:07d}", rnd):
            state.apply(fact)  # type: ignore[arg-type]
    payloads = []
    for n in range(flows):
        recipient, purpose, categories, channel = rnd.choice(TEMPLATES)
        day = f"2025-{rnd.randint(1, 12):02d}-{rnd.randint(1, 28):02d}"
        when = f"{day}T{rnd.randint(7, 17):02d}:{rnd.randint(0, 59):02d}:00Z"
        flow = b.flow(
            when,
            recipient,
            purpose,
            categories,
            subjects=[f"pupil-{rnd.randrange(pupils):07d}"],
            channel=channel,
            event_id=f"flow-{n:08d}",
            emitted=when,
        )
        payloads.append(flow.model_dump_json().encode())
    return state, payloads


def measure(seconds: float, step: Callable[[int], object]) -> float:
    """Run `step(i)` repeatedly for about `seconds`; returns calls per second."""
    gc.collect()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(1000):
            step(count)
            count += 1
        if time.perf_counter() >= deadline:
            break
    return count / (time.perf_counter() - start)


def main() -> int:
    """Build state and payloads, then measure each stage and the whole path."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pupils", type=int, default=20_000)
    parser.add_argument("--flows", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=1.0, help="per stage per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each runs every stage once, in turn")
    parser.add_argument("--cache-size", type=int, default=None, help="decoded subjects kept (default: all)")
    parser.add_argument("--no-freeze", dest="freeze", action="store_false", help="leave the GC untuned")
    args = parser.parse_args()
    policy = load_policy(ROOT / "policy")
    t0 = time.perf_counter()
    state, payloads = build(args.pupils, args.flows, cache_size=args.cache_size)
    cache = args.pupils if args.cache_size is None else args.cache_size
    print(
        f"built state for {args.pupils:,} pupils and {len(payloads):,} flows in {time.perf_counter() - t0:.1f}s"
        f" (decoded-subject cache: {cache:,})"
    )
    flows = [parse_flow(p) for p in payloads]
    # One warm-up pass: every subject decoded into the cache and every flow shape memoised on the policy index,
    # as in a worker that has run for a while. The timed payloads are still new bytes parsed on every call.
    decisions = [evaluate(f, state, policy) for f in flows]
    # The headline path must write the very bytes the Decision path does, for every flow measured.
    if any(decide_json(f, state, policy) != d.to_json_bytes() for f, d in zip(flows, decisions, strict=True)):
        raise SystemExit("decide_json differs from evaluate(...).to_json_bytes()")
    violations = sum(d.verdict == "violation" for d in decisions)
    print(f"verdicts: {len(decisions) - violations:,} allowed, {violations:,} violations")
    n = len(payloads)
    if args.freeze:
        # A long-running worker loads its state once; freezing it keeps the cyclic GC from re-scanning it.
        gc.collect()
        gc.freeze()
    stages: list[tuple[str, Callable[[int], object]]] = [
        ("validate: parse_event (any event kind)", lambda i: parse_event(payloads[i % n])),
        ("validate: parse_flow (flows topic)", lambda i: parse_flow(payloads[i % n])),
        ("evaluate (pure function, pre-parsed flows)", lambda i: evaluate(flows[i % n], state, policy)),
        ("serialise: model_dump_json().encode()", lambda i: decisions[i % n].model_dump_json().encode()),
        ("serialise: to_json_bytes()", lambda i: decisions[i % n].to_json_bytes()),
        ("evaluate + render: decide_json (pre-parsed)", lambda i: decide_json(flows[i % n], state, policy)),
        (
            # No evaluation at all: the bytes in and out alone, the ceiling of any evaluator on this path.
            "ceiling: parse_flow + to_json_bytes only",
            lambda i: (parse_flow(payloads[i % n]), decisions[i % n].to_json_bytes()),
        ),
        (
            "end to end: parse_event, model_dump_json",
            lambda i: evaluate(parse_event(payloads[i % n]), state, policy).model_dump_json().encode(),  # type: ignore[arg-type]
        ),
        (
            "end to end: parse_flow, model_dump_json",
            lambda i: evaluate(parse_flow(payloads[i % n]), state, policy).model_dump_json().encode(),
        ),
        (
            "end to end: parse_flow, to_json_bytes",
            lambda i: evaluate(parse_flow(payloads[i % n]), state, policy).to_json_bytes(),
        ),
        ("end to end: parse_flow, decide_json", lambda i: decide_json(parse_flow(payloads[i % n]), state, policy)),
    ]
    rates: dict[str, list[float]] = {label: [] for label, _ in stages}
    print(
        f"one core, single-subject flows, warm caches, gc.freeze after loading state: {args.freeze};"
        f" {args.rounds} rounds of {args.seconds:g}s per stage, stages interleaved"
    )
    for _ in range(args.rounds):
        for label, step in stages:
            rates[label].append(measure(args.seconds, step))
    print(f"  {'stage':<44} {'best /s':>9} {'us':>6}   {'median /s':>9} {'us':>6}")
    for label, found in rates.items():
        best, median = max(found), statistics.median(found)
        print(f"  {label:<44} {best:>9,.0f} {1e6 / best:6.2f}   {median:>9,.0f} {1e6 / median:6.2f}")
    final = rates[stages[-1][0]]
    best, median = max(final), statistics.median(final)
    target = 50_000
    print(
        f"decisions/s end to end (one core): best {best:,.0f}, median {median:,.0f};"
        f" target {target:,}: {'met' if median >= target else 'met at best only' if best >= target else 'NOT met'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
