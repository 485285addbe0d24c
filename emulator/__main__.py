"""``python -m emulator``: serve one emulator in the foreground (what ``EmulatorProcess`` runs).

Prints ``raytroupe emulator listening on http://HOST:PORT`` once ready, then serves until
SIGINT/SIGTERM. The configuration comes as JSON (``--config-json``), so every field of
``EmulatorConfig`` crosses the process boundary; ``--host``/``--port`` override it.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from emulator.config import EmulatorConfig
from emulator.server import serve


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments and serve; exit code 2 for a bad configuration."""
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    parser.add_argument("--config-json", default="{}", help="an EmulatorConfig as JSON")
    parser.add_argument("--host", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default: a free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        config = EmulatorConfig.model_validate_json(args.config_json)
        config = EmulatorConfig.model_validate({**config.model_dump(), **overrides})
    except ValidationError as exc:
        print(f"error: invalid emulator configuration: {exc}", file=sys.stderr)
        return 2
    serve(config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
