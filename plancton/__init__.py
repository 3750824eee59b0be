"""Plancton: a daemon that runs disposable pilot containers on a host's spare CPU."""

__version__ = "0.1.0"
