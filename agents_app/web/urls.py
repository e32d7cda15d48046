from django.urls import path

from . import views

urlpatterns = [
    path("", views.chat, name="chat"),
    path("c/<uuid:conversation_id>/", views.chat, name="conversation"),
    path("runs/<uuid:pk>/replay/", views.run_replay, name="run-replay"),
    path("account/", views.account, name="account"),
    path("account/token/new", views.token_create, name="token-create"),
    path("account/token/revoke", views.token_revoke, name="token-revoke"),
]
