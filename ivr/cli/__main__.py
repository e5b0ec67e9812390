"""`python -m ivr.cli`: the `ivr` command without its script."""

import sys

from ivr.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
