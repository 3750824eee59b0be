"""Monitoring: what the daemon reports each loop, the points built from it, and the bounded
non-blocking InfluxDB sender.
"""
