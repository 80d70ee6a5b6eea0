"""The small framework app, Django (ASGI) version."""

from django.core.asgi import get_asgi_application

import tests.apps.django_app.settings  # noqa: F401  (sets Django up)

app = application = get_asgi_application()
