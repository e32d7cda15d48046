"""Keys of DRF's authtoken app (this project's tokens until then) become hashed API tokens.

The authtoken app is no longer installed, so its table is read with SQL where it exists; the
keys keep working, and their clear text is deleted from it.
"""

import hashlib
from datetime import UTC

from django.db import migrations
from django.utils import timezone
from django.utils.dateparse import parse_datetime

AUTHTOKEN_TABLE = "authtoken_token"
PREFIX_LENGTH = 12  # tokens_app.models.PREFIX_LENGTH when this migration was written


def copy_keys(apps, schema_editor):
    connection = schema_editor.connection
    if AUTHTOKEN_TABLE not in connection.introspection.table_names():
        return
    ApiToken = apps.get_model("tokens_app", "ApiToken")
    table = schema_editor.quote_name(AUTHTOKEN_TABLE)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {schema_editor.quote_name('key')}, user_id, created FROM {table}")
        rows = cursor.fetchall()
        ApiToken.objects.bulk_create(
            ApiToken(
                user_id=user_id,
                name="API token",
                prefix=key[:PREFIX_LENGTH],
                digest=hashlib.sha256(key.encode()).hexdigest(),
                created_at=_aware(created),
            )
            for key, user_id, created in rows
        )
        cursor.execute(f"DELETE FROM {table}")


def _aware(created):
    """SQLite hands raw SQL its datetimes as naive UTC (or as text)."""
    if isinstance(created, str):
        created = parse_datetime(created)
    return timezone.make_aware(created, UTC) if timezone.is_naive(created) else created


class Migration(migrations.Migration):
    dependencies = [("tokens_app", "0001_initial")]

    operations = [migrations.RunPython(copy_keys, migrations.RunPython.noop)]
