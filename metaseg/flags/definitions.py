"""Define every flag of ``table.FLAG_SPECS`` on an absl ``FlagValues``.

Defaults are read from the config dataclasses (``dataclasses.fields``), so they live only in
``metaseg/config.py``; a flag's default is its target field's default, passed through the
spec's ``from_field`` for flags whose meaning differs from the field's (``--foml``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, List

from absl import flags as absl_flags

from metaseg.flags.table import FLAG_SPECS, FlagSpec
from metaseg.config import RunConfig


class IntListParser(absl_flags.ListParser):
    """A comma-separated list of integers (``--rsd=2,4``; argv.py also joins ``--rsd 2 4``)."""

    def parse(self, argument) -> List[int]:
        items = super().parse(argument)
        try:
            return [int(item) for item in items]
        except (TypeError, ValueError):
            raise ValueError(f"expected integers separated by commas or spaces, "
                             f"got {argument!r}") from None

    def flag_type(self) -> str:
        return "int list"


def field_default(target: str) -> Any:
    """The default of the ``RunConfig`` field at ``target`` (``"meta.meta_iters"``)."""
    section_name, _, field_name = target.rpartition(".")
    config_cls = RunConfig.sections()[section_name] if section_name else RunConfig
    field = {f.name: f for f in dataclasses.fields(config_cls)}[field_name]
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def flag_default(spec: FlagSpec) -> Any:
    """The flag's default: its targets' common field default, in flag terms."""
    defaults = [field_default(target) for target in spec.targets]
    if any(d != defaults[0] for d in defaults):
        # A flag feeding several fields (--seed) needs them to agree, or the default is ambiguous.
        raise RuntimeError(f"--{spec.name}: config defaults disagree: "
                           f"{dict(zip(spec.targets, defaults))}")
    default = spec.from_field(defaults[0])
    return list(default) if isinstance(default, tuple) else default


def _define_one(spec: FlagSpec, flag_values: absl_flags.FlagValues) -> None:
    default = flag_default(spec)
    kwargs = dict(flag_values=flag_values)
    if spec.kind == "str":
        absl_flags.DEFINE_string(spec.name, default, spec.help, **kwargs)
    elif spec.kind == "bool":
        absl_flags.DEFINE_boolean(spec.name, default, spec.help, **kwargs)
    elif spec.kind == "int":
        absl_flags.DEFINE_integer(spec.name, default, spec.help, **kwargs)
    elif spec.kind == "float":
        absl_flags.DEFINE_float(spec.name, default, spec.help, **kwargs)
    elif spec.kind == "int list":
        absl_flags.DEFINE(IntListParser(), spec.name, default, spec.help,
                          serializer=absl_flags.CsvListSerializer(","), **kwargs)
    else:
        raise ValueError(f"--{spec.name}: unknown flag kind {spec.kind!r}")


def define_flags(flag_values: absl_flags.FlagValues = absl_flags.FLAGS) -> None:
    """Define every metaseg flag on ``flag_values`` (absl's global ``FLAGS`` by default).

    Calling it again on the same ``flag_values`` is a no-op, so scripts and tests can both
    call it. A clash with a flag some other module defined raises absl's DuplicateFlagError.
    """
    if all(spec.name in flag_values for spec in FLAG_SPECS):
        return
    for spec in FLAG_SPECS:
        _define_one(spec, flag_values)
