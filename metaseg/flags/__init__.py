"""Command-line flags of run_metasegnet.py: every original flag, both spellings, typed configs.

Typical use::

    from absl import app
    from metaseg import flags

    flags.define_flags()
    app.run(main, flags_parser=flags.parse_flags_or_exit)   # main(argv) then calls
    config = flags.to_run_config()                           # -> metaseg.config.RunConfig

Modules: ``table`` (every flag once), ``definitions`` (absl definitions, defaults read from
``metaseg.config``), ``argv`` (spellings, space-separated lists, flagfiles, one-line errors),
``convert`` (flags -> ``RunConfig``).
"""

from metaseg.flags.argv import normalize_argv, parse_flags, parse_flags_or_exit, suggest
from metaseg.flags.convert import run_config_from_argv_or_exit, to_run_config
from metaseg.flags.definitions import define_flags, flag_default
from metaseg.flags.table import FLAG_SPECS, FlagSpec, flag_for_field

__all__ = [
    "FLAG_SPECS", "FlagSpec", "define_flags", "flag_default", "flag_for_field", "normalize_argv",
    "parse_flags",
    "parse_flags_or_exit", "run_config_from_argv_or_exit", "suggest", "to_run_config",
]
