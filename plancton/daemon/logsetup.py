"""Logging: a rotating file, syslog, stderr in the foreground; a failing log never stops the daemon.

The file rotates in the log folder; syslog is used where /dev/log exists. A log that cannot
be written (disk full, folder gone) never stops the daemon.
"""

import contextlib
import logging
import logging.handlers
import os
import sys
import time

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
SYSLOG_FORMAT = "plancton[%(process)d]: %(levelname)s %(message)s"
SYSLOG_SOCKET = "/dev/log"
MAX_LOG_BYTES = 10 * 1024 * 1024
LOG_BACKUPS = 5
WRITE_ERROR_REPORT_SECONDS = 300.0


class ResilientFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log file that reports a failed write (once every few minutes) elsewhere
    instead of raising or printing a traceback.
    """

    def __init__(self, path: str) -> None:
        super().__init__(path, maxBytes=MAX_LOG_BYTES, backupCount=LOG_BACKUPS, delay=True)
        self.failed_writes = 0
        self.last_error: str | None = None
        self._last_report = -WRITE_ERROR_REPORT_SECONDS

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record; a success after failures clears the reported problem."""
        failures = self.failed_writes
        super().emit(record)
        if self.failed_writes == failures:
            self.last_error = None

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        self.failed_writes += 1
        error = sys.exc_info()[1]
        self.last_error = f"cannot write the log {self.baseFilename}: {error}"
        now = time.monotonic()
        if now - self._last_report < WRITE_ERROR_REPORT_SECONDS:
            return
        self._last_report = now
        message = f"cannot write the log {self.baseFilename}: {error}; {self.failed_writes} records lost so far"
        for handler in logging.getLogger().handlers:
            if handler is not self:
                # a second failing handler must not loop back here
                with contextlib.suppress(Exception):
                    handler.emit(
                        logging.makeLogRecord({"msg": message, "levelno": logging.ERROR, "levelname": "ERROR"})
                    )


def configure(log_file: str | None, foreground: bool, level: str = "INFO") -> None:
    """Send Plancton's log records to the file, to syslog when present, and to stderr in the
    foreground; replaces any handlers set before.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    handlers: list[logging.Handler] = []
    if log_file:
        file_handler = ResilientFileHandler(log_file)
        file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
        handlers.append(file_handler)
    if foreground:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(logging.Formatter(LOG_FORMAT))
        handlers.append(stream)
    # under systemd, stderr already goes to the journal: syslog would record everything twice
    to_journal = foreground and "JOURNAL_STREAM" in os.environ
    if os.path.exists(SYSLOG_SOCKET) and not to_journal:
        try:
            syslog = logging.handlers.SysLogHandler(address=SYSLOG_SOCKET)
            syslog.setFormatter(logging.Formatter(SYSLOG_FORMAT))
            handlers.append(syslog)
        except OSError:
            pass
    for handler in handlers:
        root.addHandler(handler)
    set_level(level)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("docker").setLevel(logging.WARNING)


def set_level(level: str) -> None:
    """Change the least severe level recorded (the configuration's log_level)."""
    logging.getLogger().setLevel(getattr(logging, level, logging.INFO))


def write_problem() -> str | None:
    """Return why the log file cannot be written now, or None when it can."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ResilientFileHandler) and handler.last_error:
            return f"{handler.last_error} ({handler.failed_writes} records lost)"
    return None
