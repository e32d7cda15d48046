"""Read paths of the research app: what a user may see."""

from django.db.models import Q

from .models import Document, ResearchReport


def documents_for(user):
    """The documents a user may list, search and research: the shared ones and their own."""
    return Document.objects.filter(Q(shared=True) | Q(added_by=user))


def reports_for(user):
    return ResearchReport.objects.filter(owner=user).select_related("run")
