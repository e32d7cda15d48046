"""The statements of every run's start, built once instead of by the ORM on each call.

In a burst of starts (fifty clients at once) each start's CPU delays the first output of all
the others, and its database hop holds Django's one sync thread. The ORM compiles its SQL anew
on every call: the token lookup and the two inserts of a start cost ~0.6-0.7 ms of CPU that way
on SQLite, against ~0.25 ms with statements built once, most of it the database's own work
(docs/performance.md; `bench/start_hop.py` measures the whole hop). Values still pass through
Django's own field machinery (`pre_save`, `get_db_prep_save`, the backend's converters,
`from_db`), so rows are written and read exactly as the ORM writes and reads them. No model
signals are sent: nothing here listens for them.
"""

from contextlib import nullcontext
from functools import cache

from django.contrib.auth import get_user_model
from django.db import connections, transaction
from django.db.models import Model
from rest_framework.authtoken.models import Token


@cache
def _insert_sql(model: type[Model], using: str) -> tuple[str, tuple]:
    connection = connections[using]
    fields = tuple(f for f in model._meta.local_concrete_fields if not f.generated)
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    marks = ", ".join(["%s"] * len(fields))
    return f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ({marks})", fields


def insert(*objs: Model, using: str = "default") -> None:
    """Insert new instances, in order, as `obj.save(force_insert=True)` would. Their primary keys
    must have values already (a `uuid4` default): nothing is read back.

    Either every row is written or none. On PostgreSQL the rows go in one statement
    (data-modifying CTEs): one round trip and, outside a transaction, one commit, so one WAL
    flush instead of one per row (~0.3 ms each on this machine); elsewhere in one transaction."""
    for obj in objs:
        if obj.pk is None:
            raise ValueError(f"{type(obj).__name__} needs its primary key before insert()")
    connection = connections[using]
    statements = []
    for obj in objs:
        sql, fields = _insert_sql(type(obj), using)
        statements.append((sql, [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]))
    if connection.vendor == "postgresql" and len(statements) > 1:
        *first, last = statements
        ctes = ", ".join(f"i{n} AS ({sql})" for n, (sql, _params) in enumerate(first))
        statements = [(f"WITH {ctes} {last[0]}", [p for _sql, params in statements for p in params])]
    with transaction.atomic(using) if len(statements) > 1 else nullcontext(), connection.cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)
    for obj in objs:
        obj._state.adding, obj._state.db = False, using


@cache
def _token_sql(using: str) -> tuple[str, list[str], int, list]:
    connection = connections[using]
    user_model = get_user_model()
    token_fields = list(Token._meta.concrete_fields)
    user_fields = list(user_model._meta.concrete_fields)
    quote = connection.ops.quote_name
    columns = [f"t.{quote(f.column)}" for f in token_fields] + [f"u.{quote(f.column)}" for f in user_fields]
    sql = (
        f"SELECT {', '.join(columns)} FROM {quote(Token._meta.db_table)} t"
        f" INNER JOIN {quote(user_model._meta.db_table)} u"
        f" ON u.{quote(user_model._meta.pk.column)} = t.{quote(Token._meta.get_field('user').column)}"
        f" WHERE t.{quote(Token._meta.pk.column)} = %s"
    )
    # Per column, what the ORM would apply to the value read: the backend's converters, then
    # the field's own (`from_db_value`).
    converters = []
    for index, field in enumerate(token_fields + user_fields):
        col = field.get_col(field.model._meta.db_table)
        found = connection.ops.get_db_converters(col) + field.get_db_converters(connection)
        if found:
            converters.append((index, col, found))
    names = [f.attname for f in token_fields + user_fields]
    return sql, names, len(token_fields), converters


def token_with_user(key: str, using: str = "default") -> Token | None:
    """The token with this key and its user (`token.user`, loaded), or None: the rows
    `Token.objects.select_related("user").get(key=key)` reads, in one statement built once."""
    connection = connections[using]
    sql, names, split, converters = _token_sql(using)
    with connection.cursor() as cursor:
        cursor.execute(sql, [key])
        row = cursor.fetchone()
    if row is None:
        return None
    values = list(row)
    for index, col, found in converters:
        for converter in found:
            values[index] = converter(values[index], col, connection)
    token = Token.from_db(using, names[:split], values[:split])
    user = get_user_model().from_db(using, names[split:], values[split:])
    token.user = user
    return token
