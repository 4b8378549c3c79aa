from django.urls import path

from . import views

urlpatterns = [
    path("", views.index),
    path("set/<str:key>/<str:value>", views.set_value),
    path("get/<str:key>", views.get_value),
    path("incr/<str:key>", views.incr),
    path("stats", views.stats),
    # chaos views: 404 unless SHMCACHE_DEMO_CHAOS=1
    path("sleep/<str:seconds>", views.sleep),
    path("pauseset/<str:key>/<int:ms>", views.pause_set),
]
