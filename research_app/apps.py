from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _report_follows_its_run(sender, run_id, agent, status, error, **kwargs) -> None:
    """A research run that ended before its pipeline could say so (its process died, a cancel
    cut it short): its report ends as the run did, not `running` for ever."""
    if agent != "research":
        return
    from django.utils import timezone

    from .models import ResearchReport

    active = [ResearchReport.Status.QUEUED, ResearchReport.Status.RUNNING]
    ResearchReport.objects.filter(run_id=run_id, status__in=active).update(
        status=status, error=error, finished_at=timezone.now()
    )


def _ensure_fulltext(sender, using, **kwargs) -> None:
    """Re-create a full-text index lost to a table rebuild (SQLite ALTERs drop triggers)."""
    from django.db import connections

    from .search import DOC_TABLE, fulltext_install

    connection = connections[using]
    if DOC_TABLE in connection.introspection.table_names():
        fulltext_install(connection)


class ResearchAppConfig(AppConfig):
    name = "research_app"
    verbose_name = "Research"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # Registers the `research` agent and the offline model's plan/report composers.
        from . import pipeline  # noqa: F401

        post_migrate.connect(_ensure_fulltext, sender=self)
        from agents_app.signals import run_ended

        run_ended.connect(_report_follows_its_run, dispatch_uid="research-report-follows-its-run")
