"""Monitoring: the daemon's reports, as InfluxDB points and Prometheus metrics.

The reports and their interface, the pure points, the bounded non-blocking InfluxDB sender
and reporter, and the Prometheus endpoint and textfile.
"""
