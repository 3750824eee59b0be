"""The pure decision core: the policy, the daemon's modes and the holds it decides.

Nothing here touches the host, the engine, the clock or the file system, and nothing here
imports another package of Plancton.
"""
