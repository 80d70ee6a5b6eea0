"""The small framework app, Django's WSGI application."""

from django.core.wsgi import get_wsgi_application

import tests.apps.django_app.settings  # noqa: F401  (sets Django up)

app = application = get_wsgi_application()
