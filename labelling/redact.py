"""Hiding secrets in what we print: the password of a URI, and of every URI inside a message.

Every log line, status table, error and dataset card that names a service goes through here, so a password given in
a URI is never shown (tests/e2e/test_security.py plants one and greps all output for it).
"""

from __future__ import annotations

import re

# Any parameter whose name holds password, secret or token (tlsCertificateKeyFilePassword, sasl_token, ...).
_SECRET_PARAMS = re.compile(r"([?&](?:[^=&]*(?:password|secret|token)[^=&]*|authMechanismProperties)=)[^&]*", re.IGNORECASE)


def mask_uri(uri: str) -> str:
    """``uri`` with its password (and password-like query parameters) replaced by ``***``: the only form ever printed."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    head, question, query = rest.partition("?")
    # The host list never holds "@", so the last "@" ends the user info even when a password has a raw "@" in it.
    userinfo, at, hosts = head.rpartition("@")
    if at and ":" in userinfo:
        head = f"{userinfo.split(':', 1)[0]}:***@{hosts}"
    query = _SECRET_PARAMS.sub(r"\1***", question + query)
    return f"{scheme}{sep}{head}{query}"


_URI = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*:/{1,2}[^\s'\"()]+")


def masked(text: str) -> str:
    """``text`` with the password of every URI in it hidden: an error may echo what the user passed (a URI given as a
    file path, say), and that must not print a password."""
    return _URI.sub(lambda m: _mask(m.group()), text)


def _mask(uri: str) -> str:
    scheme, sep, rest = uri.partition(":/")
    if rest.startswith("/"):
        return mask_uri(uri)
    return mask_uri(f"{scheme}://{rest}").replace("://", ":/", 1)  # a path-normalised URI ("scheme:/user:pw@host")
