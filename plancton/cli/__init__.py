"""The command-line programs: ``planctonctl`` and ``plancton-bootstrap``."""
