"""Monitoring: the daemon's reports, as InfluxDB points, Prometheus metrics and the owner's page.

The reports and their interface, the pure points, the bounded non-blocking InfluxDB sender
and reporter, the Prometheus endpoint and textfile, the ledger's reporter, and the owner's
page.
"""
