"""What every command does before it imports the libraries: quiet warnings, one log format.

Apache Beam imports Google's client libraries (google-auth, google-api-core,
google-cloud-*), which warn at import time about Python and grpcio versions
Google will stop supporting. They say nothing about this project and would
fill the first screen of every command, `--help` included, so the entry
points (`python -m pipelines.market`, `producer`, `serving`, `runners.*`)
call `filter_library_warnings()` before those imports. The filter names the
Google packages only: every other warning still shows.
"""
from __future__ import annotations

import logging
import warnings

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def filter_library_warnings() -> None:
    """Hide the FutureWarnings the Google client libraries raise when Beam imports them."""
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"google(\.|$)")


def setup_logging(level: str | int = logging.INFO) -> None:
    """The project's log format on stderr, at `level`."""
    logging.basicConfig(level=level.upper() if isinstance(level, str) else level, format=LOG_FORMAT)
