"""The configuration: one declaration per key, the parsers, the checks across keys, safe
file reading and display. Load with :func:`plancton.config.loader.load`.
"""
