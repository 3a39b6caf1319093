"""Keyed pseudonyms of direct identifiers, and the list of erased customers.

A pseudonym is the hex HMAC-SHA256 of the value under a secret key: the same customer gets the same
pseudonym under one key (so audit records can be grouped and the erased list matched), and without
the key nobody can go from a pseudonym back to an id or test a guessed id.

The key comes from `PERSONALIZER_PSEUDONYM_KEY` (any string; the operator keeps it in a secret
store) and otherwise from `<home>/privacy/pseudonym.key`, 32 random bytes written once with 0600
permissions. Losing the key makes old pseudonyms unmatchable: the erased list could no longer keep
erased customers out of training, so back the key file up with the home, never with the audit logs.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from personalizer.config import Settings

KEY_ENV = "PERSONALIZER_PSEUDONYM_KEY"
KEY_FILE = "pseudonym.key"
ERASED_FILE = "erased.txt"


def privacy_dir(settings: Settings) -> Path:
    """Where the key, the erased list and the audit logs of a data home live."""
    return settings.home / "privacy"


def pseudonymize(value: str, key: bytes) -> str:
    """The keyed pseudonym of `value`: 64 hex characters, stable for one key.

    Args:
        value: a direct identifier (customer id, email address).
        key: the secret key (`load_key`).
    """
    return hmac.new(key, str(value).encode(), hashlib.sha256).hexdigest()


def load_key(settings: Settings, *, create: bool = True) -> bytes:
    """The pseudonym key: `PERSONALIZER_PSEUDONYM_KEY`, else the home's key file (made once).

    Raises:
        FileNotFoundError: no key configured and `create` is false.
    """
    raw = os.environ.get(KEY_ENV, "")
    if raw:
        return raw.encode()
    path = privacy_dir(settings) / KEY_FILE
    if path.exists():
        return bytes.fromhex(path.read_text().strip())
    if not create:
        raise FileNotFoundError(f"no pseudonym key: set {KEY_ENV} or create {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    # O_EXCL: two processes creating the key at once must not end up with different keys.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as handle:
        handle.write(key.hex() + "\n")
    return key


def pseudonymize_column(frame: pd.DataFrame, column: str, key: bytes) -> pd.DataFrame:
    """A copy of `frame` with `column` replaced by its pseudonyms (for exports to analysts)."""
    out = frame.copy()
    out[column] = [pseudonymize(str(v), key) for v in out[column]]
    return out


def erased_pseudonyms(settings: Settings) -> set[str]:
    """Pseudonyms of every customer erased from this home (empty when none was)."""
    path = privacy_dir(settings) / ERASED_FILE
    if not path.exists():
        return set()
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def add_erased(settings: Settings, pseudonym: str) -> bool:
    """Add a pseudonym to the erased list; False when it was already there."""
    if pseudonym in erased_pseudonyms(settings):
        return False
    path = privacy_dir(settings) / ERASED_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(pseudonym + "\n")
    return True


class ErasedCustomers:
    """The erased list of a home, asked about customer ids (by their pseudonyms).

    Read once when made. Free when nobody was erased (no key is read, nothing is hashed);
    otherwise each distinct id is hashed once and remembered.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.pseudonyms = erased_pseudonyms(settings)
        self._key: bytes | None = None
        self._known: dict[str, bool] = {}

    def __bool__(self) -> bool:
        return bool(self.pseudonyms)

    def __contains__(self, customer_id: object) -> bool:
        if not self.pseudonyms:
            return False
        text = str(customer_id).strip()
        gone = self._known.get(text)
        if gone is None:
            if self._key is None:
                self._key = load_key(self.settings)
            gone = self._known[text] = pseudonymize(text, self._key) in self.pseudonyms
        return gone

    def mask(self, ids: pd.Series) -> pd.Series:
        """True where the id is an erased customer's (missing ids are not)."""
        if not self.pseudonyms:
            return pd.Series(False, index=ids.index)
        if isinstance(ids.dtype, pd.CategoricalDtype):  # each distinct id asked once, as text
            gone_code = np.append([c in self for c in ids.cat.categories.astype(str)], False)
            return pd.Series(gone_code[ids.cat.codes.to_numpy()], index=ids.index)
        text = ids.astype("string")
        gone = {c for c in text.dropna().unique() if c in self}
        return text.isin(gone).fillna(False).astype(bool)

    def drop(self, frame: pd.DataFrame, column: str = "customer_id") -> tuple[pd.DataFrame, int]:
        """`frame` without the rows of erased customers (by `column`), and how many there were;
        `frame` itself when none (or it has no such column)."""
        if not self.pseudonyms or column not in frame.columns or frame.empty:
            return frame, 0
        gone = self.mask(frame[column]).to_numpy()
        count = int(gone.sum())
        return (frame[~gone], count) if count else (frame, 0)


def drop_erased(
    settings: Settings, frame: pd.DataFrame, column: str = "customer_id"
) -> pd.DataFrame:
    """`frame` without the rows of erased customers (what training calls on what it reads)."""
    if frame is None:
        return frame
    kept, dropped = ErasedCustomers(settings).drop(frame, column)
    return kept.reset_index(drop=True) if dropped else kept


def erased_ids(settings: Settings, candidates: Iterable[str]) -> set[str]:
    """Which of `candidates` (customer ids) are on the erased list."""
    erased = ErasedCustomers(settings)
    return {c for c in candidates if c in erased} if erased else set()
