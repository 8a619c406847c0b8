"""`python -m kernel.cli`."""

from .app import main

raise SystemExit(main())
