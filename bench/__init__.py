"""Plancton's benchmarks: refill, fill, reclaim, harvest and overhead against the engine's floor.

Every scenario runs against the real Docker Engine, with the daemon started as users start it
(``planctonctl foreground`` on temporary folders under a unique instance name) and busybox
pilots. Each figure is a median of repetitions, with its min and max, and is set against a
baseline measured in the same run, so that ratios hold on a noisy, shared machine.

Run ``bench/run`` (or ``python -m bench``); ``--quick`` gives a short pass. Results go to
``bench/results.json`` and a table on stdout; ``docs/benchmarks.md`` records the latest run.
"""
