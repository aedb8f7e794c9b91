import sys

from major2minor.cli import main

sys.exit(main())
