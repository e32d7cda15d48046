"""The statements of every run's start and end, built once instead of by the ORM on each call.

In a burst of starts (fifty clients at once) each start's CPU delays the first output of all
the others, and its database hop holds Django's one sync thread. The ORM compiles its SQL anew
on every call: the token lookup and the two inserts of a start cost ~0.6-0.7 ms of CPU that way
on SQLite, against ~0.25 ms with statements built once, most of it the database's own work
(docs/performance.md; `bench/start_hop.py` measures the whole hop). A run's end (its final
fields, terminal event and memory) went from 0.78 to 0.28 ms on SQLite and, as one statement
instead of six round trips, from 2.4 to 0.8 ms on PostgreSQL (`start_hop.py --end`). Values still pass through
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
def _insert_sql(model: type[Model], using: str, numbered: bool = False) -> tuple[str, str, tuple]:
    """The INSERT up to its VALUES, the placeholders of one row, the fields they stand for.
    `numbered`: the database numbers the primary key (an auto field), so it is left out."""
    connection = connections[using]
    fields = tuple(
        f
        for f in model._meta.local_concrete_fields
        if not f.generated and not (numbered and f is model._meta.pk)
    )
    quote = connection.ops.quote_name
    columns = ", ".join(quote(f.column) for f in fields)
    row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    return f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES ", row, fields


@cache
def _update_sql(model: type[Model], names: tuple[str, ...], using: str) -> tuple[str, tuple]:
    connection = connections[using]
    fields = tuple(model._meta.get_field(name) for name in names)
    quote = connection.ops.quote_name
    sets = ", ".join(f"{quote(f.column)} = %s" for f in fields)
    return (
        f"UPDATE {quote(model._meta.db_table)} SET {sets} WHERE {quote(model._meta.pk.column)} = %s",
        fields,
    )


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
        head, row, fields = _insert_sql(type(obj), using)
        params = [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]
        statements.append((head + row, params))
    _execute_together(statements, using)
    for obj in objs:
        obj._state.adding, obj._state.db = False, using


def update_and_add(
    updates: list[tuple[type[Model], object, dict]], rows: list[Model], using: str = "default"
) -> None:
    """`Model.objects.filter(pk=pk).update(**values)` for each (model, pk, values) of `updates`,
    then `bulk_create` of `rows` (new instances whose primary key the database numbers: it is not
    read back), all or nothing, as `insert` does it: on PostgreSQL one statement."""
    connection = connections[using]
    statements = []
    for model, pk, values in updates:
        sql, fields = _update_sql(model, tuple(values), using)
        params = [f.get_db_prep_save(values[f.name], connection) for f in fields]
        statements.append((sql, [*params, model._meta.pk.get_db_prep_save(pk, connection)]))
    by_model: dict[type[Model], list[Model]] = {}
    for obj in rows:
        by_model.setdefault(type(obj), []).append(obj)
    for model, objs in by_model.items():
        # One statement per table, its rows in order: the database numbers them in that order
        # (as `bulk_create` relies on too), and a conversation's items are read back by id.
        head, row, fields = _insert_sql(model, using, numbered=True)
        params = [f.get_db_prep_save(f.pre_save(obj, True), connection) for obj in objs for f in fields]
        statements.append((head + ", ".join([row] * len(objs)), params))
    _execute_together(statements, using)


def _execute_together(statements: list[tuple[str, list]], using: str) -> None:
    connection = connections[using]
    if connection.vendor == "postgresql" and len(statements) > 1:
        *first, last = statements
        ctes = ", ".join(f"s{n} AS ({sql})" for n, (sql, _params) in enumerate(first))
        statements = [(f"WITH {ctes} {last[0]}", [p for _sql, params in statements for p in params])]
    with transaction.atomic(using) if len(statements) > 1 else nullcontext(), connection.cursor() as cursor:
        for sql, params in statements:
            cursor.execute(sql, params)


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
