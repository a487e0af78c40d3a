"""Settings parsing: any value of any setting is a valid setting or exactly one clear error line."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import example, given
from hypothesis import strategies as st

from codexlb.errors import ConfigError
from codexlb.settings import PREFIX, SETTING_FIELDS, Settings, load_settings

ROOT = Path(tempfile.mkdtemp(prefix="codexlb-settings-props-"))
"""An empty folder: no settings.toml or .env, so only the generated variable counts."""
TOKENS = st.sampled_from(["", "true", "false", "0", "-1", "1e999", "nan", "[1, 2]", "{a = 1}", "@int 3",
                          "@json [1]", "@format {this}", "@none", "10.0.0.0/8", "http://x", "sqlite:///x",
                          "postgresql://u:p@h/db", "'quoted'", "\"dq\"", "1_000", " 7 ", "DEBUG"])
VALUES = st.one_of(TOKENS, st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30),
                   st.builds(lambda a, b: a + b, TOKENS, st.text(max_size=5)))


@given(st.sampled_from(sorted(SETTING_FIELDS)), VALUES)
@example("PORT", "@int")  # dynaconf's own markers used to escape as a DynaconfParseError traceback
@example("ALLOW_UNRESTRICTED_BIND", "@json 01")
@example("ADMIN_ALLOWED_HOSTS", "@format {this}")  # a template failed later, in validation
@example("DATABASE_POOL_SIZE", "1e999")  # an infinite whole number used to escape as an OverflowError
@example("DATA_DIR", "true")  # the defaults built from it used to raise a TypeError on a non-text value
@example("DATA_DIR", "{a = 1}")  # the database URL built from a table used to fail as well (two lines)
@example("DATA_DIR", "\x1f")  # a control character: the database URL built from it was refused instead
def test_any_value_gives_a_valid_setting_or_one_error_line_naming_it(name: str, value: str) -> None:
    try:
        settings = load_settings(ROOT, environ={PREFIX + name: value})
    except ConfigError as exc:
        assert len(exc.problems) == 1, exc.problems
        line = exc.problems[0]
        assert "\n" not in line and line.startswith(f"{PREFIX}{name}: "), line
        assert "allowed" in line or "unknown" in line, line
    else:
        assert isinstance(settings, Settings)
        assert settings.sources[name] == "environment"
