"""``python -m tests.core.run_gadget ARGS``: the devplugin CLI with the test plugin installed."""

from __future__ import annotations

import sys

from devplugin_core import _plugins as plugins
from devplugin_core import cli

from .gadget import SPEC

plugins.installed_plugins = lambda: {"gadget": SPEC}  # type: ignore[assignment]

if __name__ == "__main__":
    sys.exit(cli.main())
