"""Which database to talk to, as whom, and errors a person can act on.

    url = resolve_url(None, settings, lab, role="operator")
    with connect(url) as conn: ...

Roles: `admin` (the server's superuser, for migrations), `app` (reads and writes
trades) and `operator` (read-only, for find-trade and investigate-failures).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from tradelab.db_url import PASSWORD_PARAM
from tradelab.errors import TradelabError

if TYPE_CHECKING:
    from tradelab.lab import Lab
    from tradelab.settings import Settings

DB_NAME = "tradelab"
ADMIN_USER = "postgres"
APP_ROLE = "tradelab_app"
OPERATOR_ROLE = "tradelab_operator"

Role = Literal["admin", "app", "operator"]
_ROLE_USER = {"admin": ADMIN_USER, "app": APP_ROLE, "operator": OPERATOR_ROLE}
_ROLE_SECRET = {
    "admin": "postgres_password",
    "app": "app_db_password",
    "operator": "operator_db_password",
}


def lab_database_url(settings: Settings, lab: Lab, role: Role, host: str = "127.0.0.1",
                     port: int | None = None) -> str:
    """The URL of the lab's own database for `role`, with the lab's generated password."""
    password = quote(lab.secret(_ROLE_SECRET[role]), safe="")
    port = port or settings.ports.postgres
    return f"postgresql://{_ROLE_USER[role]}:{password}@{host}:{port}/{DB_NAME}"


def resolve_url(explicit: str | None, settings: Settings, lab: Lab, role: Role) -> str:
    """The database URL a command or service uses: the one home of this rule.

    --database-url (`explicit`) as given; else TRADELAB_DATABASE_URL / the setting
    database_url; else the lab's own database with the lab's credentials for `role`.
    The operator tools read as the operator role whatever the setting names: a
    database_url with the app's (or the superuser's) credentials is taken for its
    server and database only, with the operator role's lab password.
    """
    if explicit:
        return explicit
    if settings.database_url:
        if role == "operator":
            return with_role(settings.database_url, OPERATOR_ROLE,
                             lab.secret(_ROLE_SECRET["operator"]))
        return settings.database_url
    return lab_database_url(settings, lab, role)


def with_role(url: str, user: str, password: str) -> str:
    """`url` (a URL or a key=value DSN) as `user` with `password`; kept as it is when it
    already names `user` (its own password wins then)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(url)
    except Exception as exc:  # noqa: BLE001 - psycopg raises ProgrammingError subclasses
        raise TradelabError(f"invalid database URL {redact(url)}: {exc}") from None
    if params.get("user") == user:
        return url
    params.update(user=user, password=password)
    return make_conninfo("", **{k: v for k, v in params.items() if v is not None})


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    url = PASSWORD_PARAM.sub(r"\1***", url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable database URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def explain(exc: BaseException, url: str) -> str:
    """One line saying what went wrong connecting to `url` and what to check."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    where = redact(url)
    low = text.lower()
    if "password authentication failed" in low or "no password supplied" in low:
        return (f"database refused the password for {where}: check the user and password "
                "(--database-url / TRADELAB_DATABASE_URL, or the lab's secrets/)")
    if "does not exist" in low and "database" in low:
        return f"database not found at {where}: create it, or run `tradelab db migrate`"
    if "role" in low and "does not exist" in low:
        return f"database role missing at {where}: run `tradelab db migrate` first"
    if any(s in low for s in ("connection refused", "could not connect", "timeout",
                              "no such file", "could not translate host", "name or service")):
        return (f"database unreachable at {where}: is PostgreSQL running? "
                "(`tradelab up`, or check --database-url / TRADELAB_DATABASE_URL)")
    return f"database error at {where}: {text}"


def bounded_session(statement_timeout_ms: int, lock_timeout_ms: int,
                    idle_in_transaction_ms: int | None = None,
                    dead_peer_s: int = 15) -> dict[str, Any]:
    """libpq connection parameters that bound every wait of a long-lived connection.

    Server side: no statement runs longer than `statement_timeout_ms`, no lock is waited
    for longer than `lock_timeout_ms`, and (when given) a session that stops talking
    inside a transaction is ended after `idle_in_transaction_ms`, releasing its locks.
    Client side: TCP keepalives notice a silent peer on an idle connection, and
    tcp_user_timeout ends a connection whose sent data stays unacknowledged, both in
    about `dead_peer_s` seconds (a partition, a host gone without a FIN).
    """
    options = [f"-c statement_timeout={int(statement_timeout_ms)}",
               f"-c lock_timeout={int(lock_timeout_ms)}"]
    if idle_in_transaction_ms is not None:
        options.append(f"-c idle_in_transaction_session_timeout={int(idle_in_transaction_ms)}")
    interval = max(1, dead_peer_s // 5)
    return {
        "keepalives": 1,
        "keepalives_idle": max(1, dead_peer_s - 3 * interval),
        "keepalives_interval": interval,
        "keepalives_count": 3,
        "tcp_user_timeout": dead_peer_s * 1000,
        "options": " ".join(options),
    }


def connect(url: str, *, connect_timeout: int = 5, **kwargs: Any):
    """A psycopg connection, or a TradelabError that says what to check."""
    import psycopg

    try:
        return psycopg.connect(url, connect_timeout=connect_timeout, **kwargs)
    except psycopg.Error as exc:
        raise TradelabError(explain(exc, url)) from None
    except (ValueError, psycopg.ProgrammingError) as exc:
        raise TradelabError(f"invalid database URL {redact(url)}: {exc}") from None


def wait_until_reachable(url: str, timeout: float, interval: float = 1.0) -> None:
    """Retry connecting to `url` until it answers or `timeout` seconds pass.

    For a migration started next to a database that is still booting (containers).
    A refused password or a missing role will not fix itself: raised at once.
    """
    import time

    deadline = time.monotonic() + timeout
    while True:
        try:
            connect(url, connect_timeout=max(1, min(5, int(timeout)))).close()
            return
        except TradelabError as exc:
            permanent = "refused the password" in str(exc) or "role missing" in str(exc)
            if permanent or time.monotonic() + interval > deadline:
                raise
        time.sleep(interval)
