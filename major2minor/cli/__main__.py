"""``python -m major2minor.cli ...`` (as ``m2m ...``)."""

import sys

from major2minor.cli import main

sys.exit(main())
