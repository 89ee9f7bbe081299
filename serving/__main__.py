"""Development server: `python -m serving [--port 8000 ...]` (production: gunicorn, docs/serving.md)."""
from __future__ import annotations

import sys
from collections.abc import Sequence

from market import console

console.filter_library_warnings()

from serving import create_app, settings  # noqa: E402 - after the warning filter


def main(argv: Sequence[str] | None = None) -> int:
    """Run the Werkzeug development server with threads (one per WebSocket client)."""
    config, ns = settings.parse_args(argv)
    console.setup_logging(ns.log_level)
    app = create_app(config)
    app.run(host=ns.host, port=ns.port, threaded=True, use_reloader=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
