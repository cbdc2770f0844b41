"""``python -m funnel.cli``."""

from funnel.cli.main import main

raise SystemExit(main())
