"""Memory of the evaluator's state for 1,000,000 pupils with typical consents (target: <= 200 MiB).

Run: `.venv/bin/python bench/state_memory.py [--pupils N]`. A typical pupil here has a date of birth, an
enrolment, one parent with parental responsibility, two consents (promotional photos for the Trust's
publications; peripatetic music) with UUID consent ids, and three in ten have withdrawn one of them. The
records are built directly in the layout `SubjectState.apply` produces (checked against `apply` for a
sample pupil first), because validating five million facts through pydantic would only measure pydantic.
Memory is measured with tracemalloc (Python allocations) and as the process RSS delta.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import time
import tracemalloc
import uuid
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams import builders as b  # noqa: E402
from streams.state import PR, State, SubjectState, to_us  # noqa: E402

SCHOOLS = ("hawthorn-primary", "rose-valley")
PHOTO = ("identity.name", "photographs")
MUSIC = ("contact", "identity")


def pupil_id(n: int) -> str:
    """A UPN-shaped id (13 characters)."""
    return f"A{n:012d}"


def typical(n: int, rnd: random.Random) -> tuple[SubjectState, list[object]]:
    """A typical pupil's state, and the facts that produce it (the facts only for checking the layout)."""
    parent = f"P{n:010d}"
    birth = date(rnd.randint(2007, 2021), rnd.randint(1, 12), rnd.randint(1, 28))
    school = SCHOOLS[n % 2]
    photo_id, music_id = str(uuid.UUID(int=rnd.getrandbits(128))), str(uuid.UUID(int=rnd.getrandbits(128)))
    enrolled = f"2024-09-04T08:{rnd.randint(0, 59):02d}:00Z"
    signed = f"2024-09-{rnd.randint(5, 20):02d}T{rnd.randint(8, 21):02d}:{rnd.randint(0, 59):02d}:00Z"
    withdrawn = f"2025-0{rnd.randint(1, 6)}-{rnd.randint(10, 28)}T12:{rnd.randint(0, 59):02d}:00Z"
    facts: list[object] = [
        b.born(pupil_id(n), birth, when=enrolled),
        b.enrolled(enrolled, pupil_id(n), school),
        b.standing(enrolled, pupil_id(n), parent, "mother", pr=True),
        b.consent(
            signed,
            pupil_id(n),
            None,
            "promotional_photo",
            list(PHOTO),
            recipient_class="publication",
            by=parent,
            consent_id=photo_id,
        ),
        b.consent(
            signed, pupil_id(n), "peripatetic-music", "music_tuition", list(MUSIC), by=parent, consent_id=music_id
        ),
    ]
    state = SubjectState()
    t_enrol, t_signed = to_us(b.at(enrolled)), to_us(b.at(signed))
    state.births = [(t_enrol, birth.toordinal())]
    state.moves = [(t_enrol, True, school, False)]
    state.standings = [(t_enrol, parent, "mother", PR)]
    consents = [
        (t_signed, photo_id, parent, "mother", PR, None, "publication", "promotional_photo", PHOTO, None),
        (t_signed, music_id, parent, "mother", PR, "peripatetic-music", None, "music_tuition", MUSIC, None),
    ]
    state.consents = sorted(consents, key=lambda r: (r[0], r[1]))
    if rnd.random() < 0.3:
        facts.append(b.withdrawal(withdrawn, pupil_id(n), consent_id=music_id, by=parent))
        state.withdrawals = [(to_us(b.at(withdrawn)), music_id, parent, "mother", PR, None, None, None, ())]
    return state, facts


def check_layout() -> None:
    """The directly built state equals what `apply` builds from real, validated facts."""
    for n in range(200):
        direct, facts = typical(n, random.Random(n))
        applied = State()
        for fact in facts:
            applied.apply(fact)  # type: ignore[arg-type]
        assert applied.subject(pupil_id(n)) == direct, f"layout drifted for pupil {n}"


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def main() -> int:
    """Build state for N pupils and print its memory."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pupils", type=int, default=1_000_000)
    args = parser.parse_args()
    check_layout()
    rnd = random.Random(2024)
    subjects = [typical(n, rnd)[0] for n in range(1000)]  # a pool of pupils, re-keyed below
    state = State(cache_size=0)
    packed_pool = [subject.pack(state.vocabulary) for subject in subjects]
    gc.collect()
    rss_before = rss_bytes()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    payload = 0
    for n in range(args.pupils):
        packed = packed_pool[n % 1000]
        payload += len(packed)
        state.put_packed(pupil_id(n), packed)
    elapsed = time.perf_counter() - started
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    rss = rss_bytes() - rss_before
    mib = 1024 * 1024
    print(f"pupils: {len(state):,}   built in {elapsed:.1f}s")
    print(f"packed subject state: {payload / args.pupils:.1f} bytes per pupil on average")
    print(f"state memory (tracemalloc): {traced / mib:,.1f} MiB   ({traced / args.pupils:.0f} bytes per pupil)")
    print(f"state memory (RSS delta):   {rss / mib:,.1f} MiB")
    scaled = traced / args.pupils * 1_000_000 / mib
    print(f"for 1,000,000 pupils: {scaled:,.1f} MiB   target 200 MiB: {'met' if scaled <= 200 else 'NOT met'}")
    sample = pupil_id(args.pupils - 1)
    assert state.subject(sample) == subjects[(args.pupils - 1) % 1000]
    return 0


if __name__ == "__main__":
    sys.exit(main())
