"""A deterministic school year for the Trust's two example schools, emitted through the connectors' formats.

    run = simulate(SimConfig(out=Path("sim"), seed=7, days=10))

writes `<outbox>/<connector>/` files (MIS exports, consent forms, sync logs, mail traces, CTFs), the events no
file connector carries as JSON lines to POST to the ingest API (`http/events.jsonl`, see `post_events`), the
arrival order of everything (`arrivals.jsonl`), one line per injected violation (`ground_truth.jsonl`) and
counts (`summary.json`). The same seed gives byte-identical output.
"""

from producers.simulator.config import SimConfig, SimRun
from producers.simulator.poster import PostSummary, post_events
from producers.simulator.runner import simulate

__all__ = ["PostSummary", "SimConfig", "SimRun", "post_events", "simulate"]
