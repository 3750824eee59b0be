"""Keeps the pilots' image available according to the pull policy, without blocking the loop.

Pulls run in a background thread; while one runs, or while the image is missing, no pilot
starts. A failed pull with the image present locally keeps using the local image; with no
image, one clear error is logged per retry period.
"""

import logging
import threading
import time
from collections.abc import Callable

from plancton.engines.base import Engine
from plancton.errors import EngineUnavailable, PilotError

log = logging.getLogger(__name__)
RETRY_SECONDS = 60.0


class ImageKeeper:
    """Answers whether pilots may start with the configured image, pulling it when needed.

    Args:
        engine: the Docker adapter.
        clock: a monotonic clock.
    """

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.clock = clock
        self._present: dict[str, bool] = {}
        self._last_pull: dict[str, float] = {}
        self._last_failure: dict[str, float] = {}
        self._pulling: threading.Thread | None = None
        #: images found missing that could not be had (pull failed, or pull_policy never)
        self._unavailable: set[str] = set()

    def known(self, reference: str) -> bool | None:
        """Return whether the image was there when last looked for (None: never looked for)."""
        return self._present.get(reference)

    def unavailable(self, reference: str) -> bool:
        """Return whether the image is missing and could not be had: its pull failed, or
        pull_policy is never (a pull under way, or not tried yet, is not that)."""
        return self._present.get(reference) is False and reference in self._unavailable

    def forget(self, reference: str) -> None:
        """Forget what is known of an image (after a create said it is missing)."""
        self._present.pop(reference, None)

    def ready(self, reference: str, policy: str, expiration: float) -> bool:
        """Return whether pilots may start now with this image; start a pull if one is due."""
        if self._pulling is not None and self._pulling.is_alive():
            return self._present.get(reference, False)
        now = self.clock()
        if not self._present.get(reference):
            # a missing image is looked for again each time pilots should start: one loaded
            # by hand (docker load, docker import) is used at once
            self._present[reference] = self.engine.image_present(reference)
        present = self._present[reference]
        if self._pull_due(reference, policy, expiration, present, now):
            self._pulling = threading.Thread(target=self._pull, args=(reference, present), daemon=True)
            self._pulling.start()
            return present  # a refresh keeps using the local image meanwhile
        if not present and policy == "never":
            self._report_missing(reference, now, "pull_policy is never: load it with docker load or docker import")
        return present

    def _pull_due(self, reference: str, policy: str, expiration: float, present: bool, now: float) -> bool:
        if policy == "never":
            return False
        if now - self._last_failure.get(reference, -RETRY_SECONDS) < RETRY_SECONDS:
            return False
        if not present:
            return True
        return policy == "always" and now - self._last_pull.get(reference, -expiration - 1) > expiration

    def _pull(self, reference: str, present: bool) -> None:
        log.info("pulling image %s", reference)
        try:
            self.engine.pull(reference)
        except (PilotError, EngineUnavailable) as error:
            self._last_failure[reference] = self.clock()
            if present:
                self._last_pull[reference] = self.clock()
                log.warning("pull of %s failed (%s); using the local image", reference, error)
            else:
                self._report_missing(reference, self.clock(), f"pull failed: {error}")
            return
        self._last_pull[reference] = self.clock()
        self._present[reference] = True
        self._unavailable.discard(reference)
        log.info("image %s pulled", reference)

    def _report_missing(self, reference: str, now: float, why: str) -> None:
        self._unavailable.add(reference)
        if now - self._last_failure.get(f"report:{reference}", -RETRY_SECONDS) >= RETRY_SECONDS:
            self._last_failure[f"report:{reference}"] = now
            log.error(
                "image %s is not available, so no pilot starts (%s); retrying every %.0f s",
                reference,
                why,
                RETRY_SECONDS,
            )
