"""``python -m authsession``: the same as the ``authsession`` command."""

from authsession.cli import main

raise SystemExit(main())
