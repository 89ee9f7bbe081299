"""`python -m runners.compose`: see `runners.compose.submit`."""
import sys

from runners.compose.submit import main

sys.exit(main())
