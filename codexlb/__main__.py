"""``python -m codexlb`` runs the command line."""

from codexlb.cli import main

raise SystemExit(main())
