"""How planctonctl and the daemon talk: the folders, the pidfile, the mode files and the
state file. Standard library and psutil only: planctonctl imports no engine or metrics client.
"""
