"""Full-text index of the documents corpus: FTS5 + triggers on SQLite, a generated tsvector on PostgreSQL."""

from django.db import migrations


def install(apps, schema_editor):
    from research_app.search import fulltext_install

    fulltext_install(schema_editor.connection, rebuild=True)


def uninstall(apps, schema_editor):
    from research_app.search import fulltext_uninstall

    fulltext_uninstall(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("research_app", "0001_initial")]

    operations = [migrations.RunPython(install, uninstall)]
