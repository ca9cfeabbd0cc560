"""`python -m agent` is the same as the `isoedge` command."""

from agent.tools.cli import main

raise SystemExit(main())
