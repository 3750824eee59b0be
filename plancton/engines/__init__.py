"""Container engines: the :class:`~plancton.engines.base.Engine` protocol the daemon uses, its
adapter over the Docker API, the container specification and the image keeper.
"""
