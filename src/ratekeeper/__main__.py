"""``python -m ratekeeper``: the same as the ``ratekeeper`` command."""

from ratekeeper.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
