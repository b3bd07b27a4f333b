"""End-to-end benchmarks of the whole stack, each next to the floor measured in the same run.

Every benchmark drives real processes on loopback — a private mosquitto, ``stimd run``
daemons and ``stimd-sim`` simulators with line-rate emulation on — and takes its ground
truth from the simulator's pulse log, which shares the host's monotonic clock with this
process. ``python -m bench`` runs all of them and writes ``docs/performance.md``;
``python -m bench.<name> --help`` runs one.
"""
