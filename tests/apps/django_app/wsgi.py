"""The small framework app, Django's WSGI application (settings from the package)."""

from django.core.wsgi import get_wsgi_application

import tests.apps.django_app  # noqa: F401  (configures the settings)

app = application = get_wsgi_application()
