"""The WSGI entry point for a server such as gunicorn: ``gunicorn -w 4 bridge.wsgi:app``.

Settings come from the environment, as for ``upay-bridge serve`` (see the README). Workers run
separately (``upay-bridge worker``).
"""

from .app import create_app
from .cli import _setup_logging
from .config import load_settings
from .gil import tune_for_serving
from .runtime import bootstrap

tune_for_serving()
_settings = load_settings()
_setup_logging(_settings.log_level)
app = create_app(bootstrap(_settings))
