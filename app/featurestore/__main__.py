"""Entry point of `python -m app.featurestore`."""

import sys

from app.featurestore.cli import main

sys.exit(main())
