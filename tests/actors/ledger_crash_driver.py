"""A process that records batches into a Ledger until it is killed (for the kill -9 test).

Prints ``acked N`` once batch N (records ``bN-0`` .. ``bN-9``) is acknowledged, so the test
knows exactly what the Ledger promised before the kill.

Usage: python -m tests.actors.ledger_crash_driver DATA_DIR
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from actors.ledger import Ledger
from tests.actors.ledger_fixtures import make_record

BATCH = 10


async def record_forever(data_dir: Path) -> None:
    ledger = Ledger(data_dir)
    batch = 0
    while True:
        await ledger.record([make_record(f"b{batch}-{i}") for i in range(BATCH)])
        print(f"acked {batch}", flush=True)
        batch += 1


if __name__ == "__main__":
    asyncio.run(record_forever(Path(sys.argv[1])))
