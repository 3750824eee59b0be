"""Container engines: the protocol the daemon uses and its adapter over the Docker API.

The :class:`~plancton.engines.base.Engine` protocol, its adapter over the Docker API, the
container specification and the image keeper.
"""
