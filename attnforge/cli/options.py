"""Command-line options from a configuration dataclass: one source of names, defaults, help and types.

``add_config_options(parser, Config)`` adds ``--field-name`` per dataclass
field: the type from its annotation (``int``, ``float``, ``str``, ``bool`` and
``X | None``), the default from the field's default, the help from the
``Parameters`` section of the class docstring (numpydoc). ``config_from_args``
builds the configuration back, so a value the dataclass refuses is refused with
the dataclass's own message. Nothing here knows a particular configuration.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
import typing

__all__ = ["docstring_params", "add_config_options", "config_kwargs", "config_from_args"]

_METAVARS = {int: "N", float: "X", str: "NAME"}


def docstring_params(cls) -> dict[str, str]:
    """``{name: one-line description}`` from the numpydoc ``Parameters`` section of ``cls``'s docstring.

    An entry ``a, b : int`` documents both names; the description is the indented text below it.
    """
    doc = inspect.getdoc(cls) or ""
    m = re.search(r"^Parameters\n-+\n(.*?)(?=^\S[^\n]*\n-+\n|\Z)", doc, re.S | re.M)
    if not m:
        return {}
    out, names, text = {}, [], []

    def flush():
        for name in names:
            out[name] = " ".join(text).strip()

    for line in m.group(1).splitlines():
        if line and not line[0].isspace():
            flush()
            names, text = [n.strip() for n in line.split(":")[0].split(",")], []
        elif line.strip():
            text.append(line.strip())
    flush()
    return {k: v.replace("``", "") for k, v in out.items()}


def _base_type(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def _fields(cls, include, exclude):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = list(include) if include is not None else [n for n in fields if n not in exclude]
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise ValueError(f"{cls.__name__} has no field(s) {unknown}")
    return [fields[n] for n in names]


def add_config_options(parser, cls, *, include=None, exclude=(), choices=None, derived=None,
                       title: str | None = None) -> list[str]:
    """Add an option per field of dataclass ``cls`` to ``parser``; returns the field names added.

    ``include``/``exclude`` pick fields (all by default); ``choices`` maps a field to its allowed
    values; ``derived`` maps a field to the text of a default that the job works out (the option
    then defaults to ``None``, and the help says ``[text]``).
    """
    choices, derived = choices or {}, derived or {}
    hints = typing.get_type_hints(cls)
    helps = docstring_params(cls)
    group = parser.add_argument_group(title or f"{cls.__name__} parameters (defaults in brackets)")
    names = []
    for f in _fields(cls, include, exclude):
        flag = "--" + f.name.replace("_", "-")
        base = _base_type(hints[f.name])
        text = helps.get(f.name, f.name)
        if f.name in derived:
            default, shown = None, derived[f.name]
        else:
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            shown = "auto" if default is None else default
        if base is bool:
            if default:
                group.add_argument("--no-" + flag[2:], dest=f.name, action="store_false",
                                   help=f"{text} [on; this turns it off]")
            else:
                group.add_argument(flag, dest=f.name, action="store_true", help=f"{text} [off]")
            parser.set_defaults(**{f.name: bool(default)})
        else:
            group.add_argument(flag, dest=f.name, type=base if base in _METAVARS else str, default=default,
                               choices=choices.get(f.name), help=f"{text} [{shown}]",
                               metavar=None if f.name in choices else _METAVARS.get(base, "VALUE"))
        names.append(f.name)
    return names


def config_kwargs(args: argparse.Namespace, names) -> dict:
    """The parsed values of ``names`` (as added by ``add_config_options``)."""
    return {n: getattr(args, n) for n in names}


def config_from_args(cls, args: argparse.Namespace, names, **extra):
    """``cls(**parsed values, **extra)``: the dataclass checks the values."""
    return cls(**config_kwargs(args, names), **extra)
