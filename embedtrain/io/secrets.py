"""Secrets never reach disk, a model card or a log line.

A recipe may hold credentials (``training.hub_token``, a ``*token*`` / ``*password*`` / ``*secret*`` key
anywhere). :func:`redact` returns a copy of a mapping with such values replaced by ``"***"``; every recipe
embedtrain writes (beside a final model, in a staged upload, in a model card) goes through it.
:func:`register_secret` remembers a secret value so that :class:`RedactingFilter`, installed on the log
handlers, scrubs it from every log line, whatever logger emits it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

#: Keys whose values are credentials.
SECRET_KEY = re.compile(r"token|password|passwd|secret|api[_-]?key|credential", re.IGNORECASE)
MASK = "***"

_SECRETS: set[str] = set()


def is_secret_key(key: object) -> bool:
    return isinstance(key, str) and bool(SECRET_KEY.search(key))


def redact(data: Any) -> Any:
    """A copy of ``data`` (nested dicts/lists) with the value of every secret-looking key masked."""
    if isinstance(data, dict):
        return {k: (MASK if is_secret_key(k) and v not in (None, "") else redact(v)) for k, v in data.items()}
    if isinstance(data, list):
        return [redact(v) for v in data]
    return data


def secret_values(data: Any) -> set[str]:
    """The secret strings in ``data`` (values of secret-looking keys)."""
    found: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            if is_secret_key(key) and isinstance(value, str) and value:
                found.add(value)
            else:
                found |= secret_values(value)
    elif isinstance(data, list):
        for value in data:
            found |= secret_values(value)
    return found


def scrub(text: str) -> str:
    """``text`` with every registered secret replaced by ``***``."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Scrubs registered secrets from a record's message (after %-formatting) and arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _SECRETS:
            message = record.getMessage()
            cleaned = scrub(message)
            if cleaned != message:
                record.msg, record.args = cleaned, None
        return True


#: Loggers that have handlers of their own (libraries that do not propagate to the root logger).
LIBRARY_LOGGERS = ("transformers", "sentence_transformers", "datasets", "accelerate", "peft", "mteb",
                   "huggingface_hub")


def register_secret(value: str) -> None:
    """Remember ``value`` as a secret and make sure the log handlers scrub it."""
    if len(value) >= 6:  # a short value would mask ordinary words
        _SECRETS.add(value)
    install_filter()


def install_filter(logger: logging.Logger | None = None) -> None:
    """Put a :class:`RedactingFilter` on every handler of ``logger`` (default: the root logger and the libraries'
    own loggers), once."""
    loggers = [logger] if logger is not None else [logging.getLogger(), *map(logging.getLogger, LIBRARY_LOGGERS)]
    for log in loggers:
        for handler in log.handlers:
            if not any(isinstance(f, RedactingFilter) for f in handler.filters):
                handler.addFilter(RedactingFilter())
