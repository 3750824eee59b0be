"""Helpers of the tests and benchmarks: the real services they start (engines, InfluxDB,
Prometheus, logind, HTCondor, Work Queue) and the loads they put on the host."""
