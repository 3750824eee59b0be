"""How planctonctl and the daemon talk: folders, pidfile, mode files, state file.

Standard library and psutil only: planctonctl imports no engine or metrics client.
"""
