"""`python -m app`: the start command (see app.serve)."""

from app.serve import main

raise SystemExit(main())
