"""Where the password of a PostgreSQL connection string is, and how to take it out.

    url, password = split_password("postgresql://me:pw@db/trades")
    # ("postgresql://me@db/trades", "pw"); likewise "...?password=pw", "... password=pw"
    with_password(url, password)   # "postgresql://me:pw@db/trades" again

libpq takes a password in three places: the user part of a URL (`user:pw@host`), a
URL parameter (`?password=pw`) and a key=value string (`password=pw`). The lab keeps
a user's password in a secret file (tradelab.stack), never in an environment
variable, and the service puts it back (tradelab.settings, the local runtime).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote, urlsplit, urlunsplit

# A password given as a parameter: "?password=…" in a URL, "password=…" in a
# key=value connection string (libpq accepts both forms).
PASSWORD_PARAM = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&]*)", re.IGNORECASE)


def split_password(url: str) -> tuple[str, str | None]:
    """(`url` without its password, that password decoded), or (url, None) when it has
    none. libpq takes a password in three places, and each is split out: the user part
    of a URL (`user:pw@host`), a URL parameter (`?password=pw`) and a key=value
    connection string (`password=pw`). `with_password` puts it back."""
    if "://" not in url:
        return _split_keyword_password(url)
    try:
        parts = urlsplit(url)
    except ValueError:
        return url, None
    if parts.password is not None:
        user, _, host = parts.netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}@{host}"
        return urlunsplit(parts._replace(netloc=netloc)), unquote(parts.password)
    # libpq percent-decodes parameters, and a "+" stays a "+" (no form encoding).
    params = parts.query.split("&") if parts.query else []
    passwords = [p.partition("=")[2] for p in params if p.partition("=")[0] == "password"]
    if not passwords:
        return url, None
    rest = "&".join(p for p in params if p.partition("=")[0] != "password")
    return urlunsplit(parts._replace(query=rest)), unquote(passwords[-1])


def _split_keyword_password(dsn: str) -> tuple[str, str | None]:
    """split_password for a key=value connection string ('…' quoting, \\ escapes)."""
    found = list(PASSWORD_PARAM.finditer(dsn))
    if not found:
        return dsn, None
    value = found[-1].group(2)
    if value.startswith("'"):
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    rest = PASSWORD_PARAM.sub("", dsn)
    return " ".join(rest.split()), value


def with_password(url: str, password: str) -> str:
    """`url` (as split_password left it) with `password` again: in the user part when the
    URL names a user there, else as a parameter; unchanged when it has a password."""
    if split_password(url)[1] is not None:
        return url
    if "://" not in url:
        quoted = password.replace("\\", "\\\\").replace("'", "\\'")
        return f"{url} password='{quoted}'"
    parts = urlsplit(url)
    if parts.username:
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{parts.netloc.rpartition('@')[0]}:{quote(password, safe='')}@{host}"
        return urlunsplit(parts._replace(netloc=netloc))
    query = "&".join(filter(None, [parts.query, f"password={quote(password, safe='')}"]))
    return urlunsplit(parts._replace(query=query))
