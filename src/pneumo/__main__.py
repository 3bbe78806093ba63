"""``python -m pneumo`` (also what ``torchrun -m pneumo train ...`` runs)."""

import sys

from pneumo.cli import main

sys.exit(main())
