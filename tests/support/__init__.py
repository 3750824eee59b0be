"""Helpers of the tests and benchmarks: the real services they start (engines, InfluxDB,
Prometheus, logind, HTCondor, Work Queue), the owner's load they put on the host, and file
trees laid out like the kernel's."""
