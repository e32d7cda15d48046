"""/api/tokens/: a user's own API tokens. Listed, created (the key is in that one answer),
revoked; another user's token is a 404 like any missing one."""

from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.exceptions import PermissionDenied, ValidationError
from rest_framework.response import Response

from .models import ApiToken, TooManyTokens, token_create, token_revoke, tokens_of


class ApiTokenSerializer(serializers.ModelSerializer):
    expired = serializers.BooleanField(read_only=True)

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "created_at", "expires_at", "last_used_at", "expired"]
        read_only_fields = ["prefix", "created_at", "last_used_at"]

    def validate_name(self, value: str) -> str:
        if not value.strip():
            raise ValidationError("may not be blank")
        return value.strip()

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise ValidationError("must be in the future (leave it out for a token that never expires)")
        return value


class NewApiTokenSerializer(ApiTokenSerializer):
    key = serializers.CharField(read_only=True, help_text="The key: shown in this answer only.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "key"]


class ApiTokenViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.DestroyModelMixin, viewsets.GenericViewSet
):
    serializer_class = ApiTokenSerializer
    lookup_value_regex = "[0-9]{1,18}"

    def get_queryset(self):
        return tokens_of(self.request.user)

    @extend_schema(request=ApiTokenSerializer, responses={201: NewApiTokenSerializer})
    def create(self, request, *args, **kwargs):
        # A leaked key must not be able to mint keys that outlive its own revocation.
        if isinstance(request.auth, ApiToken):
            raise PermissionDenied(
                "tokens are created by a signed-in user (the account page, or this endpoint with "
                "the session), not with a token"
            )
        serializer = ApiTokenSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            token, key = token_create(request.user, **serializer.validated_data)
        except TooManyTokens as exc:
            raise ValidationError({"non_field_errors": [str(exc)]}) from None
        return Response({**ApiTokenSerializer(token).data, "key": key}, status=201)

    @extend_schema(responses={204: None})
    def destroy(self, request, *args, **kwargs):
        """Revoke: from now on the key is refused, and streams it opened close within one
        keep-alive interval."""
        token_revoke(self.get_object())
        return Response(status=204)
