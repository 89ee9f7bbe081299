"""`python -m producer`: see `producer.cli`."""
import sys

from market import console

console.filter_library_warnings()

from producer.cli import main

sys.exit(main())
