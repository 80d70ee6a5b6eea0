import json

from django.http import JsonResponse, StreamingHttpResponse
from django.urls import path
from django.views.decorators.csrf import csrf_exempt


async def get_item(request, item_id):
    return JsonResponse({"item_id": item_id, "q": request.GET.get("q"), "path": request.path, "framework": "django"})


@csrf_exempt
async def post_echo(request):
    if request.method != "POST":
        return JsonResponse({"error": "POST only"}, status=405)
    return JsonResponse({"received": json.loads(request.body), "framework": "django"})


async def stream(request):
    async def gen():
        for i in range(3):
            yield f"part{i};"

    return StreamingHttpResponse(gen(), content_type="text/plain")


def sync_view(request):
    return JsonResponse({"sync": True})


urlpatterns = [
    path("items/<int:item_id>", get_item),
    path("echo", post_echo),
    path("stream", stream),
    path("sync", sync_view),
]
