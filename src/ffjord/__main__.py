"""`python -m ffjord ...`: the same command line as the `ffjord` script.

Example:
    python -m ffjord train --out runs/tutorial
"""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
