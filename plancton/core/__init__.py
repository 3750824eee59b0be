"""The pure decision core: the policy, the safe expression evaluator, units and modes.

Nothing here touches the host, the engine, the clock or the file system.
"""
