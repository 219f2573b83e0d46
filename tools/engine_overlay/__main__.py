"""`python -m engine_overlay` and the `overlay` console script.

The entry point lives here, not in cli.py, so that a Ctrl-C while the CLI itself is
being imported is one line and status 130 too, never a traceback.
"""

import sys


def run() -> None:
    try:
        from .cli import main
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    main()


if __name__ == "__main__":
    run()
