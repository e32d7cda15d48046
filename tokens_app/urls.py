from rest_framework.routers import SimpleRouter

from .api import ApiTokenViewSet

router = SimpleRouter()
router.trailing_slash = "/?"
router.register("tokens", ApiTokenViewSet, basename="api-token")

urlpatterns = router.urls
