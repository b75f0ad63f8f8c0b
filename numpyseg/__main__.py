"""`python -m numpyseg` is the `numpyseg` command."""

import sys

from numpyseg.cli.main import main

sys.exit(main())
