"""Prints the figures of a simulated hour of polling: 200 feeds with mixed behaviours on 10
loopback hosts, the real poller and an injected clock (no real waiting). See bench/README.md."""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import farm as sim


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "farm.db"
        started = time.monotonic()
        farm = sim.build(db)
        try:
            sim.simulate(farm, db)
            report = sim.check(farm)
        finally:
            sim.close(farm)
        for line in report.lines():
            print(line)
        faults = [f for f in farm.feeds if sim.expected_status(f)[0]]
        shown = sum(
            1
            for f in faults
            if farm.states[f.name].status == sim.expected_status(f)[0]
            and sim.expected_status(f)[1]
            in f"{farm.states[f.name].last_error} {farm.states[f.name].redirect_url}"
        )
        print(f"faults reflected in the status: {shown} of {len(faults)}")
        for f in faults:
            st = farm.states[f.name]
            if st.status != sim.expected_status(f)[0]:
                print(f"  {f.name}: {st.status} {st.last_error} {st.next_reason}")
        print(f"wall time: {time.monotonic() - started:.1f}s")


if __name__ == "__main__":
    main()
