"""``python -m ratekeeper``: the same as the ``ratekeeper`` command."""

from ratekeeper.cli import main

raise SystemExit(main())
