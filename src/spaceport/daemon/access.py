"""Who may ask the daemon what: a person with the basic-auth password (``--auth-user``,
``--auth-password-file``; on CERIT's cluster the desktop's noVNC password, the convention of
CERIT's desktop apps), and scripts with the API token (``Authorization: Bearer``).

Both are compared in constant time (``hmac.compare_digest``, every part compared whatever
the others gave), and neither is ever logged: the daemon's log redacts them, and requests
are logged by method, path without its query, and status only.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class BasicAuth:
    user: str
    password: str

    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value of a 401: the realm names the user to type."""
        realm = f"spaceport: user '{self.user}' and the desktop's password"
        try:
            realm.encode("latin-1")
        except UnicodeEncodeError:  # a header is latin-1: do not name such a user there
            realm = "spaceport"
        realm = realm.replace("\\", "\\\\").replace('"', '\\"')
        return f'Basic realm="{realm}", charset="UTF-8"'

    def accepts(self, header: str | None) -> bool:
        """Does an ``Authorization`` header carry this user and password?"""
        scheme, _, value = (header or "").strip().partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            given = base64.b64decode(value.strip(), validate=True)
        except (binascii.Error, ValueError):
            return False
        user, sep, password = given.partition(b":")
        user_ok = hmac.compare_digest(user, self.user.encode())
        password_ok = hmac.compare_digest(password, self.password.encode())
        return bool(sep) and user_ok and password_ok


def bearer_accepts(header: str | None, token: str | None) -> bool:
    """Does an ``Authorization`` header carry the API token? (Never without a token.)"""
    if not token:
        return False
    scheme, _, value = (header or "").partition(" ")
    value = value.strip() if scheme.lower() == "bearer" else ""
    return hmac.compare_digest(value.encode(), token.encode())


def read_basic_auth(user: str | None, password_file: str | None) -> BasicAuth | None:
    """The credentials ``run`` was given, or None (no basic auth). The password is the
    file's content as it is (a Kubernetes Secret's value), one trailing newline ignored."""
    if not user and not password_file:
        return None
    if not (user and password_file):
        raise UsageError("give --auth-user and --auth-password-file together.")
    if ":" in user:
        raise UsageError(f"--auth-user {user!r}: a basic-auth user name cannot hold ':'.")
    try:
        with open(password_file, encoding="utf-8") as f:
            password = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
        raise UsageError(f"cannot read the password file {password_file}: {why}.") from None
    password = password.removesuffix("\n").removesuffix("\r")
    if not password:
        raise UsageError(f"the password file {password_file} is empty.")
    return BasicAuth(user, password)
