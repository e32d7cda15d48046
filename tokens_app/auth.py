"""DRF authentication with API tokens: `Authorization: Token <key>` or `Bearer <key>`."""

from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header

from .models import ApiToken, token_for_key, token_used


def authenticate_key(key: str) -> ApiToken:
    """The usable token for this key, its use recorded; else AuthenticationFailed saying why."""
    token = token_for_key(key)
    if token is None:
        raise exceptions.AuthenticationFailed("invalid token", code="invalid_token")
    if token.revoked_at is not None:
        raise exceptions.AuthenticationFailed("this token has been revoked", code="token_revoked")
    if token.expired:
        raise exceptions.AuthenticationFailed("this token has expired", code="token_expired")
    if not token.user.is_active:
        raise exceptions.AuthenticationFailed("user inactive or deleted", code="invalid_token")
    token_used(token)
    return token


class ApiTokenAuthentication(BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request):
        parts = get_authorization_header(request).split()
        if not parts or parts[0].lower() != self.keyword.lower().encode():
            return None
        if len(parts) != 2:
            raise exceptions.AuthenticationFailed(
                f"send the header as '{self.keyword} <key>', the key without spaces", code="invalid_token"
            )
        try:
            key = parts[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("invalid token", code="invalid_token") from None
        token = authenticate_key(key)
        return token.user, token

    def authenticate_header(self, request):
        return "Token"


class BearerTokenAuthentication(ApiTokenAuthentication):
    """The same keys as `Authorization: Bearer <key>`: the header of the `openai` clients and of
    most tools built on them."""

    keyword = "Bearer"
