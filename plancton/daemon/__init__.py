"""The daemon: the loop and the parts it drives.

Its loop, the roster of pilots, the executor of a plan, the configuration
watcher, the event thread and the signals it records.
"""
