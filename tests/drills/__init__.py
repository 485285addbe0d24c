"""Fault drills (issue 12): faults injected on 127.0.0.1, totals held against the emulator's bill.

Shared set-up is in ``conftest.py`` (a runtime over an emulator configured by the module's
``EMULATOR``) and ``bill.py`` (Ledger minus bill). Drills that passed before this package
existed stay where they were written, and ``benchmarks/drills.py`` runs them from outside
pytest too:

- D1 transient 529/500: ``tests/actors/test_agent_faults.py``
- D8 kill -9 of the Ledger, D9 of the RateLimiter: ``tests/actors/test_kills.py``
- D13 driver kill -9, re-run pays for the missing chunks:
  ``tests/topologies/test_mapreduce.py::test_a_rerun_after_a_crash_pays_only_for_the_missing_chunks``
- D14a budget under concurrency: ``tests/actors/test_ledger_budget.py``
- D14b budget stop in map-reduce: ``test_budget_stop.py`` here
"""
