"""Named crash points, for the crash-and-resume tests: ``LPSELECT_CRASH_AT=name`` kills the process there.

SIGKILL (not an exception) so that no cleanup code runs: the test sees what a power cut or an OOM kill leaves.
"""

from __future__ import annotations

import os
import signal


def crash_point(name: str) -> None:
    if os.environ.get("LPSELECT_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
