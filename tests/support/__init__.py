"""Helpers of the tests and benchmarks: the real services they start (engines, InfluxDB,
Prometheus, logind, HTCondor, Work Queue), the owner's load they put on the host, file
trees laid out like the kernel's, the Prometheus dashboard's queries as Grafana writes them,
and the owner's page in a real browser (with the command that writes its screenshot in
docs/)."""
