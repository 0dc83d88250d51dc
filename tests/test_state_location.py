"""Where a watch keeps its state: parsed, never guessed."""

from __future__ import annotations

import pytest

from ief_jobs._state_location import parse_state_location

PASSWORD = "hunter2"  # noqa: S105 (a fake, checked to never show)


class TestParse:
    @pytest.mark.parametrize(
        ("text", "target"),
        [
            ("redis://:hunter2@host:6379/0", "redis://:hunter2@host:6379/0"),
            ("Redis://:hunter2@host:6379/0", "redis://:hunter2@host:6379/0"),
            ("REDISS://:hunter2@host:6380/1", "rediss://:hunter2@host:6380/1"),
            ("UNIX:///run/redis.sock?db=2", "unix:///run/redis.sock?db=2"),
        ],
    )
    def test_redis_schemes_in_any_case(self, text: str, target: str) -> None:
        """redis://, rediss:// and unix:// in any letter case are Redis; the
        scheme is handed on in lower case."""
        location = parse_state_location(text)

        assert ("redis", target) == (location.kind, location.target)
        assert PASSWORD not in repr(location)

    @pytest.mark.parametrize(
        "text", ["watch.db", "./a:b", "/var/lib/ief/state.db", "dir/x.sqlite"]
    )
    def test_a_plain_path_is_a_sqlite_file(self, text: str) -> None:
        """Only a plain path is a file, a colon after a './' included."""
        location = parse_state_location(text)

        assert ("sqlite", text) == (location.kind, location.target)

    @pytest.mark.parametrize(
        ("text", "named"),
        [
            ("redis+sentinel://:hunter2@host:26379/0", "redis+sentinel:"),
            ("Redis+Sentinel://:hunter2@host", "Redis+Sentinel:"),
            ("redis:hunter2@host:6379", "redis:"),
            ("REDIS:host:6379", "REDIS:"),
            ("http://user:hunter2@host/", "http:"),
            ("a:hunter2", "a:"),
            ("state/redis://:hunter2@host", None),
        ],
    )
    def test_anything_else_is_refused_naming_only_the_scheme(
        self, text: str, named: str | None
    ) -> None:
        """Another scheme, a Redis scheme without '//', or a URL that does not
        start the text: one line that names the scheme and nothing after it."""
        with pytest.raises(ValueError, match="state") as info:
            parse_state_location(text)

        message = str(info.value)
        assert PASSWORD not in message
        assert "host" not in message
        assert "\n" not in message
        if named is not None:
            assert f"'{named}'" in message or f"after '{named}'" in message

    @pytest.mark.parametrize(("text", "error"), [("", ValueError), (5, TypeError)])
    def test_empty_or_not_text(self, text: object, error: type[Exception]) -> None:
        """Nothing to parse is refused, by the one contract."""
        with pytest.raises(error):
            parse_state_location(text)  # type: ignore[arg-type]
