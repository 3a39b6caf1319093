"""Helpers shared by the dataset adapters."""

from __future__ import annotations

import numpy as np
import pandas as pd

# Country names as found in public datasets → (ISO code, a representative IANA time zone).
COUNTRIES: dict[str, tuple[str, str]] = {
    "united kingdom": ("GB", "Europe/London"),
    "uk": ("GB", "Europe/London"),
    "eire": ("IE", "Europe/Dublin"),
    "ireland": ("IE", "Europe/Dublin"),
    "germany": ("DE", "Europe/Berlin"),
    "france": ("FR", "Europe/Paris"),
    "spain": ("ES", "Europe/Madrid"),
    "portugal": ("PT", "Europe/Lisbon"),
    "netherlands": ("NL", "Europe/Amsterdam"),
    "belgium": ("BE", "Europe/Brussels"),
    "switzerland": ("CH", "Europe/Zurich"),
    "austria": ("AT", "Europe/Vienna"),
    "italy": ("IT", "Europe/Rome"),
    "norway": ("NO", "Europe/Oslo"),
    "sweden": ("SE", "Europe/Stockholm"),
    "denmark": ("DK", "Europe/Copenhagen"),
    "finland": ("FI", "Europe/Helsinki"),
    "iceland": ("IS", "Atlantic/Reykjavik"),
    "poland": ("PL", "Europe/Warsaw"),
    "czech republic": ("CZ", "Europe/Prague"),
    "greece": ("GR", "Europe/Athens"),
    "cyprus": ("CY", "Asia/Nicosia"),
    "malta": ("MT", "Europe/Malta"),
    "lithuania": ("LT", "Europe/Vilnius"),
    "channel islands": ("JE", "Europe/Jersey"),
    "australia": ("AU", "Australia/Sydney"),
    "japan": ("JP", "Asia/Tokyo"),
    "singapore": ("SG", "Asia/Singapore"),
    "israel": ("IL", "Asia/Jerusalem"),
    "lebanon": ("LB", "Asia/Beirut"),
    "bahrain": ("BH", "Asia/Bahrain"),
    "saudi arabia": ("SA", "Asia/Riyadh"),
    "united arab emirates": ("AE", "Asia/Dubai"),
    "canada": ("CA", "America/Toronto"),
    "usa": ("US", "America/New_York"),
    "united states": ("US", "America/New_York"),
    "brazil": ("BR", "America/Sao_Paulo"),
    "rsa": ("ZA", "Africa/Johannesburg"),
    "south africa": ("ZA", "Africa/Johannesburg"),
    "nigeria": ("NG", "Africa/Lagos"),
    "korea": ("KR", "Asia/Seoul"),
    "thailand": ("TH", "Asia/Bangkok"),
    "west indies": ("JM", "America/Jamaica"),
    "bermuda": ("BM", "Atlantic/Bermuda"),
    "european community": ("EU", "Europe/Brussels"),
}


def country_and_zone(names: pd.Series) -> tuple[pd.Series, pd.Series]:
    """ISO code (or the name itself when unknown) and time zone (None when unknown)."""
    key = names.astype("string").str.strip().str.lower()
    code = key.map(lambda k: COUNTRIES.get(k, (None, None))[0] if isinstance(k, str) else None)
    tz = key.map(lambda k: COUNTRIES.get(k, (None, None))[1] if isinstance(k, str) else None)
    code = code.where(code.notna(), names)
    return code.astype(object), tz.astype(object)


def id_text(values: pd.Series) -> pd.Series:
    """Identifiers as text; numbers read as floats (`17850.0`) lose the `.0`."""
    if pd.api.types.is_float_dtype(values.dtype):
        return values.astype("Int64").astype("string")
    if pd.api.types.is_integer_dtype(values.dtype):
        return values.astype("string")
    return values.astype("string").str.strip()


def reject(
    frame: pd.DataFrame, mask: pd.Series | np.ndarray, field: str, reason: str, values: pd.Series
) -> None:
    """Mark rows as removed by the adapter (first reason wins)."""
    mask = np.asarray(mask, dtype=bool) & frame["_error"].isna().to_numpy()
    frame.loc[mask, "_error"] = reason
    frame.loc[mask, "_field"] = field
    frame.loc[mask, "_value"] = values[mask].astype(object).map(str)


def most_common(frame: pd.DataFrame, key: str, value: str) -> pd.Series:
    """The most frequent non-null `value` per `key` (ties: the smallest), indexed by key."""
    counts = frame.dropna(subset=[value]).groupby([key, value]).size().reset_index(name="_n")
    counts = counts.sort_values([key, "_n", value], ascending=[True, False, True])
    firsts = counts.drop_duplicates(key).set_index(key)[value]
    return firsts.reindex(frame[key].dropna().unique())
