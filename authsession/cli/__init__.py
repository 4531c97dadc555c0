"""The ``authsession`` command: ``demo``, ``token`` and ``request``.

Not imported by ``import authsession``. ``token`` and ``request`` need nothing
beyond authsession itself; ``demo``'s live view needs rich, from the ``cli``
extra (``pip install 'authsession[cli]'``).
"""

from ._app import build_parser, main

__all__ = ["build_parser", "main"]
