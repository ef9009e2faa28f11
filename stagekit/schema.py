"""Which keys a config slice may have, declared by the package that owns the slice.

A schema is a dict: each valid key maps to ANY (a value, checked by its owner's `problems`), to a
nested schema (a section whose keys are checked too), or, under the one key EACH, to the schema of
every entry of a mapping whose keys are names (the training stages, one per name).

    SCHEMA = {"launcher": {"name": ANY, "nnodes": ANY, ...}}      in the owning package

Why: Hydra accepts `+any.key=value` and a config file's typo alike; a key nobody reads would be
fingerprinted and do nothing (a misspelt learning rate trains with the old one). Every key of a
run's config is checked against the schemas before any work; an unknown one is refused with its
full path and the nearest valid name."""

from __future__ import annotations

import difflib
from typing import Any, Mapping

ANY = None    # any value (its owner checks it)
EACH = "*"    # the schema of every entry of a mapping keyed by names


def keys(*names: str, **sections: Any) -> dict:
    """A schema: the plain keys by name, the nested sections by keyword."""
    return {**{n: ANY for n in names}, **sections}


def undeclared_keys(cfg: Mapping, schema: Mapping, path: str = "") -> list[str]:
    """A problem line for each key of cfg its schema does not know: its full path and the nearest
    valid name."""
    out = []
    for key, value in cfg.items():
        where = f"{path}.{key}" if path else str(key)
        if EACH in schema:
            sub = schema[EACH]
        elif key in schema:
            sub = schema[key]
        else:
            out.append(unknown_key(where, str(key), schema))
            continue
        if isinstance(sub, Mapping) and isinstance(value, Mapping):
            out += undeclared_keys(value, sub, where)
    return out


def unknown_key(where: str, key: str, schema: Mapping) -> str:
    valid = sorted(str(k) for k in schema)
    near = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]}? " if near else ""
    return f"{where}: unknown key; {hint}valid keys: {', '.join(valid)}"


def merge(*schemas: Mapping) -> dict:
    """One schema from the slices several packages declare (each owns its own top-level keys)."""
    out: dict = {}
    for schema in schemas:
        for key, sub in schema.items():
            if key in out and out[key] != sub:
                raise ValueError(f"config slice {key!r} declared twice, differently")
            out[key] = sub
    return out
