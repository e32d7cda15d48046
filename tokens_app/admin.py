"""Staff create and revoke any user's tokens; the key of a new one is shown once, in a message."""

from django.contrib import admin, messages
from django.utils import timezone

from .models import ApiToken, new_key, token_revoke


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [("active", "active"), ("expired", "expired"), ("revoked", "revoked")]

    def queryset(self, request, queryset):
        now = timezone.now()
        if self.value() == "revoked":
            return queryset.exclude(revoked_at=None)
        if self.value() == "expired":
            return queryset.filter(revoked_at=None, expires_at__lte=now)
        if self.value() == "active":
            return queryset.filter(revoked_at=None).exclude(expires_at__lte=now)
        return queryset


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "prefix", "state", "created_at", "expires_at", "last_used_at"]
    list_filter = [StateFilter, "created_at"]
    list_select_related = ["user"]
    search_fields = ["name", "prefix", "user__username"]
    raw_id_fields = ["user"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        return ["user", "name", "expires_at"] + ([] if obj is None else self.readonly_fields)

    def get_readonly_fields(self, request, obj=None):
        # The owner of an existing token is history: a key does not move to another user.
        return [] if obj is None else ["user", *self.readonly_fields]

    @admin.display(description="state")
    def state(self, token: ApiToken) -> str:
        return "revoked" if token.revoked_at else "expired" if token.expired else "active"

    def save_model(self, request, obj, form, change):
        if not change:
            key = new_key()
            obj.set_key(key)
            messages.warning(
                request,
                f"The key of {obj.name!r} for {obj.user}: {key} — copy it now, it is not shown again.",
            )
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke the selected tokens", permissions=["change"])
    def revoke(self, request, queryset):
        for token in queryset.filter(revoked_at=None):
            token_revoke(token)
        self.message_user(request, "Revoked: programs using these keys are refused from now on.")
