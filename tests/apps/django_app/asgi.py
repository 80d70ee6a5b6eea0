"""The small framework app, Django (ASGI) version. Settings configured in code, no database."""

import django
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY="tests-only-not-secret",
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF="tests.apps.django_app.urls",
        INSTALLED_APPS=[],
        MIDDLEWARE=["django.middleware.common.CommonMiddleware"],
        DATABASES={},
        USE_TZ=True,
        APPEND_SLASH=False,
    )
    django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402

app = application = get_asgi_application()
