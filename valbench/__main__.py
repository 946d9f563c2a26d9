"""python -m valbench: the valbench command."""
import sys

from valbench.cli import main

if __name__ == "__main__":
    sys.exit(main())
