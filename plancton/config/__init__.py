"""The configuration: its schema, the parsers of its values, and loading it from a file.

One declaration per key, the parsers, the checks across keys, safe file reading and
display. Load with :func:`plancton.config.loader.load`.
"""
