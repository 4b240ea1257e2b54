from django.contrib import admin
from django.contrib.staticfiles.urls import staticfiles_urlpatterns
from django.urls import include, path

from project.views import HomeView

urlpatterns = [
    path("", HomeView.as_view(), name="home"),
    path("admin/", admin.site.urls),
    path("twilio/", include("voiceconv.urls")),
]
# With DEBUG on, serve static files (the softphone's scripts) under any ASGI server, not
# only runserver; in production, collectstatic and a static file server do it.
urlpatterns += staticfiles_urlpatterns()
