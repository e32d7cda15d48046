from django.urls import path

from . import views

urlpatterns = [
    path("", views.chat, name="chat"),
    path("c/<uuid:conversation_id>/", views.chat, name="conversation"),
    path("runs/<uuid:pk>/replay/", views.run_replay, name="run-replay"),
    path("approvals/", views.approvals, name="approvals-page"),
    path("account/", views.account, name="account"),
    path("account/tokens/new", views.token_new, name="token-new"),
    path("account/tokens/<int:pk>/revoke", views.token_delete, name="token-revoke"),
]
