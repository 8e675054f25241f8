"""Flags -> typed ``RunConfig`` at the edge; nothing past here reads absl's FLAGS.

Each flag's value goes to the config fields its spec names (``table.py``), through the
spec's ``to_field`` where the flag's meaning differs (``--foml`` -> ``algorithm="fomaml"``,
``--disable_rsd_residual_connections`` -> ``rsd_residual=False``). Range and cross-field
checks live in the dataclasses, so library users get them too.
"""

from __future__ import annotations

from typing import Sequence

from absl import flags as absl_flags
from absl import logging

from metaseg.flags.argv import flag_error_message, parse_flags
from metaseg.flags.table import FLAG_SPECS, flag_for_field
from metaseg.config import RunConfig
from metaseg.errors import ConfigError, exit_on_error, named_as


def to_run_config(flag_values: absl_flags.FlagValues = absl_flags.FLAGS) -> RunConfig:
    """Build the run's config from parsed flags. Raises ``ConfigError`` on a bad value (a
    ``FieldError`` naming the config field: ``metaseg.errors.named_as(flag_for_field)``
    spells it as the flag)."""
    sections = {name: {} for name in RunConfig.sections()}
    top = {}
    for spec in FLAG_SPECS:
        flag = flag_values[spec.name]
        value = spec.to_field(flag.value)
        for target in spec.targets:
            section, _, field = target.rpartition(".")
            (sections[section] if section else top)[field] = value
        if spec.compat and flag.present:
            logging.debug("--%s is accepted for compatibility with the original and ignored.",
                          spec.name)
    built = {name: cls(**sections[name]) for name, cls in RunConfig.sections().items()}
    return RunConfig(**built, **top)


@exit_on_error
def run_config_from_argv_or_exit(
        argv: Sequence[str],
        flag_values: absl_flags.FlagValues = absl_flags.FLAGS) -> RunConfig:
    """Parse ``argv`` (program name first) and build the config; any mistake ends the program
    with one ``error: ...`` line and exit 2.

    Stray words are mistakes too (``parse_flags`` refuses them).
    """
    try:
        parse_flags(argv, flag_values)
    except absl_flags.Error as e:
        raise ConfigError(flag_error_message(e)) from None
    with named_as(flag_for_field):  # a config field's error names its flag
        return to_run_config(flag_values)
