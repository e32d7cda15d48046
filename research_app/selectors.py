"""Read paths of the research app: what a user may see."""

from .models import ResearchReport


def reports_for(user):
    return ResearchReport.objects.filter(owner=user).select_related("run")
