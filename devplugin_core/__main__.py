"""``python -m devplugin_core`` is the ``devplugin`` command."""

import sys

from .cli import main

sys.exit(main())
