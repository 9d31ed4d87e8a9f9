"""Restore `n` copies of one flow from `b:` changelog values of about 512 KiB; print the growth of the peak RSS.

Run in a process of its own by `test_processor.py`: peak RSS counts SQLite's memory too, which tracemalloc
does not see. Prints `<peak RSS growth during finish()> <bytes of changelog lines>`.
"""

import sys
from datetime import timedelta

from schemas.policy import load_policy
from streams import processor
from streams.builders import flow
from streams.openflows import OpenFlows
from streams.processor import StreamState

n, policy_dir = int(sys.argv[1]), sys.argv[2]
processor._RESTORE_FLUSH = 1_000  # what waits to be written to the open-flow store: 2 MB here
policy = load_policy(policy_dir)
a = StreamState(policy, timedelta(days=2))
first = flow(
    "2024-06-03T10:00Z", "peripatetic-music", "music_tuition", ["identity"], subjects=["p-0"], event_id="f-000000"
)
a.handle(first)
template = next(v for k, v in a.changes("t") if k.startswith(b"b:"))
per_batch = 512 * 1024 // len(template)


def hwm() -> int:
    """The process's peak RSS so far, in bytes."""
    with open("/proc/self/status") as status:
        return int(status.read().split("VmHWM:")[1].split()[0]) * 1024


b = StreamState(policy, timedelta(days=2), on_disk=True)
b.flows = OpenFlows(on_disk=True, cache_mib=2)
restoring = b.restoring()
for start in range(0, n, per_batch):
    lines = [template.replace(b"f-000000", b"f-%06d" % i) for i in range(start, min(n, start + per_batch))]
    restoring.add([(b"b:t%d" % start, b"\n".join(lines))])
before = hwm()
restoring.finish()
assert b.open_flows() == n, b.open_flows()
print(hwm() - before, len(template) * n)
