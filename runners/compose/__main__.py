"""`python -m runners.compose`: see `runners.compose.submit`."""
import sys

from market import console

console.filter_library_warnings()

from runners.compose.submit import main

sys.exit(main())
