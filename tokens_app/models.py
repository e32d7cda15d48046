"""API tokens: several per user, named, with an optional expiry, stored as a SHA-256 hash.

A key is random (240 bits), so a fast hash is enough: nobody can guess keys against a leaked
table. Only the first PREFIX_LENGTH characters are kept in clear, to find the row and to let
people tell their tokens apart. Revoking keeps the row (who had access, until when) for staff.
"""

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import models, transaction
from django.utils import timezone

KEY_PREFIX = "das_"  # Django Agents Server: a key found in a log or a repository says what it is
PREFIX_LENGTH = 12  # KEY_PREFIX + 8 random characters
# `last_used_at` is written at most this often per token: not one write per request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiToken(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=PREFIX_LENGTH, db_index=True, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name = "API token"

    def __str__(self):
        return f"{self.name} ({self.prefix}…)"

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def usable(self) -> bool:
        return self.revoked_at is None and not self.expired and self.user.is_active

    def set_key(self, key: str) -> None:
        self.prefix, self.digest = key[:PREFIX_LENGTH], key_hash(key)

    def matches(self, key: str) -> bool:
        return hmac.compare_digest(self.digest, key_hash(key))


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(30)


class TooManyTokens(Exception):
    pass


def tokens_of(user):
    """A user's tokens not revoked (expired ones included: they show as expired until revoked)."""
    return ApiToken.objects.filter(user=user, revoked_at=None)


def active_tokens(user):
    return tokens_of(user).exclude(expires_at__lte=timezone.now())


def token_create(user, name: str, expires_at=None, key: str | None = None) -> tuple[ApiToken, str]:
    """A new token and its key: the only time the key exists outside the caller's hands.
    `key` is for a key made elsewhere (the demo's, derived from its secret). TooManyTokens when
    the user holds API_TOKENS_PER_USER active ones."""
    key = key or new_key()
    with transaction.atomic():
        # Counted under the user's row lock: parallel requests cannot pass the cap together.
        get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        if active_tokens(user).count() >= settings.API_TOKENS_PER_USER:
            raise TooManyTokens(f"you have {settings.API_TOKENS_PER_USER} tokens: revoke one first")
        token = ApiToken(user=user, name=name, expires_at=expires_at)
        token.set_key(key)
        token.save()
    return token, key


def token_revoke(token: ApiToken) -> None:
    """From now on the key is refused everywhere; streams it opened close at their next check."""
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        ApiToken.objects.filter(pk=token.pk, revoked_at=None).update(revoked_at=token.revoked_at)


def token_for_key(key: str) -> ApiToken | None:
    """The token this key is, usable or not (the caller says why not); None: no such key."""
    if len(key) < PREFIX_LENGTH or len(key) > 200:
        return None
    # No ORDER BY: a prefix has one token but for a one-in-2^48 chance, and every request asks.
    for token in ApiToken.objects.select_related("user").filter(prefix=key[:PREFIX_LENGTH]).order_by():
        if token.matches(key):
            return token
    return None


def token_used(token: ApiToken) -> None:
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        token.last_used_at = now
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)


def token_still_usable(token_id: int) -> bool:
    """For a stream opened with this token: is it still neither revoked nor expired?"""
    token = ApiToken.objects.select_related("user").filter(pk=token_id).first()
    return token is not None and token.usable
