import sys

from vlsafety.cli import main

sys.exit(main())
