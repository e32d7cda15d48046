from datetime import timedelta

from django import forms
from django.utils import timezone

EXPIRY_CHOICES = [("30", "in 30 days"), ("90", "in 90 days"), ("365", "in a year"), ("", "never")]


class TokenForm(forms.Form):
    """The account page's form: a name, and an expiry counted in days from now."""

    name = forms.CharField(max_length=100, initial="API token")
    expires_in = forms.ChoiceField(choices=EXPIRY_CHOICES, initial="90", required=False, label="Expires")

    def expires_at(self):
        days = self.cleaned_data["expires_in"]
        return timezone.now() + timedelta(days=int(days)) if days else None
