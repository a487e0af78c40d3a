"""`codexlb accounts import` / `export`: Codex auth.json in both key styles, updates instead of duplicates."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Any

import pytest

from codexlb.accounts.authjson import AuthFileError, parse_auth_json, parse_timestamp
from codexlb.settings import Settings
from codexlb.testing.fake_upstream import FakeAccount, FakeUpstream
from codexlb.testing.jwt import make_jwt
from tests.accounts.conftest import add_accounts, assert_no_secrets, stored

JWT = make_jwt({"exp": 2, "https://api.openai.com/auth": {"chatgpt_account_id": "acct-jwt"}})


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def camel(account: FakeAccount) -> dict[str, Any]:
    """The camelCase variant codex-lb accepts."""
    return {"tokens": {"idToken": account.id_token, "accessToken": account.access_token,
                       "refreshToken": account.refresh_token, "accountId": account.chatgpt_account_id},
            "lastRefreshAt": "2026-08-20T09:15:02.123456789Z"}


async def test_import_both_variants_and_reimport_updates(fake: FakeUpstream, settings: Settings, cli, caplog,
                                                         tmp_path: Path) -> None:
    one, two = fake.add_account("acct-snake", email="snake@example.com"), fake.add_account("acct-camel")
    snake_file = write(tmp_path / "one" / "auth.json", one.auth_json())
    camel_file = write(tmp_path / "two.json", camel(two))
    run = cli(settings, "accounts", "import", str(snake_file.parent), str(camel_file))
    assert await run.result() == 0
    assert re.search(r"added account acct-\w{8} <snake@example.com>", run.out)
    assert re.search(r"added account acct-\w{8} <fake2@example.com>", run.out)
    rows = {row.chatgpt_account_id: row for row in await stored(settings)}
    assert set(rows) == {"acct-snake", "acct-camel"}
    assert rows["acct-camel"].token_refreshed_at == parse_timestamp("2026-08-20T09:15:02.123456Z")
    assert rows["acct-snake"].refresh_token == one.refresh_token

    one.mint_tokens()  # Codex refreshed the file meanwhile
    write(snake_file, one.auth_json())
    run = cli(settings, "accounts", "import", str(snake_file))
    assert await run.result() == 0 and re.search(r"updated account acct-\w{8} <snake@example.com>", run.out)
    rows = {row.chatgpt_account_id: row for row in await stored(settings)}
    assert len(rows) == 2 and rows["acct-snake"].access_token == one.access_token
    assert_no_secrets(fake, run.output, caplog=caplog)


async def test_import_checks_every_file_first_and_imports_none_if_one_is_bad(
        fake: FakeUpstream, settings: Settings, cli, caplog, tmp_path: Path) -> None:
    account = fake.add_account()
    good = write(tmp_path / "good.json", account.auth_json())
    garbage = account.auth_json()
    garbage["tokens"]["id_token"] = "abc"
    files = [good, write(tmp_path / "broken.json", "{not json"),
             write(tmp_path / "apikey.json", {"auth_mode": "apikey", "OPENAI_API_KEY": "sk-x", "tokens": None}),
             write(tmp_path / "partial.json", {"tokens": {"access_token": "x"}}),
             write(tmp_path / "garbage.json", garbage),
             tmp_path / "missing.json"]
    run = cli(settings, "accounts", "import", *map(str, files))
    assert await run.result() == 1
    assert "broken.json: not valid JSON" in run.err
    assert "apikey.json: this auth.json holds an API key" in run.err
    assert "partial.json: tokens lack id_token and refresh_token" in run.err
    assert "garbage.json: id_token is not a JWT" in run.err
    assert "missing.json: cannot read" in run.err
    assert "good.json" not in run.err and "5 of 6 file(s) invalid; nothing was imported" in run.err
    assert await stored(settings) == []
    assert_no_secrets(fake, run.output, caplog=caplog)
    run = cli(settings, "accounts", "import", str(good))
    assert await run.result() == 0 and len(await stored(settings)) == 1


@pytest.mark.parametrize(("document", "message"), [
    ([], "expected a JSON object"),
    ({"auth_mode": "chatgpt"}, "no \"tokens\" object"),
    ({"tokens": {"id_token": "i", "access_token": 1, "refresh_token": "r"}}, "must be strings"),
    ({"tokens": {"id_token": "abc", "access_token": JWT, "refresh_token": "r"}}, "id_token is not a JWT"),
    ({"tokens": {"id_token": JWT, "access_token": "a.b.c", "refresh_token": "r"}}, "access_token is not a JWT"),
    ({"tokens": {"id_token": JWT, "access_token": make_jwt({"sub": "x"}), "refresh_token": "r", "account_id": "a"}},
     "access_token has no exp"),
    ({"tokens": {"id_token": make_jwt({"sub": "x"}), "access_token": make_jwt({"exp": 2}), "refresh_token": "r"}},
     "the tokens name no ChatGPT account"),
])
def test_parse_errors(document: Any, message: str) -> None:
    with pytest.raises(AuthFileError, match=message):
        parse_auth_json(document)


def test_account_id_from_the_file_when_the_claims_lack_it() -> None:
    document = {"tokens": {"id_token": make_jwt({"sub": "x"}), "access_token": make_jwt({"exp": 2}),
                           "refresh_token": "r", "account_id": "acct-file"}}
    assert parse_auth_json(document).account_id == "acct-file"


def test_timestamps() -> None:
    assert parse_timestamp("2026-08-20T09:15:02Z") == parse_timestamp("2026-08-20T09:15:02.000000000+00:00")
    assert parse_timestamp(1_700_000_000) == 1_700_000_000.0
    assert parse_timestamp("yesterday") is None and parse_timestamp(None) is None


async def test_export_to_file_is_private_and_reimportable(fake: FakeUpstream, settings: Settings, cli, caplog,
                                                          tmp_path: Path) -> None:
    account = fake.add_account("acct-export", email="export@example.com")
    await add_accounts(settings, [account], label="exp")
    target = tmp_path / "new" / "folder" / "auth.json"
    run = cli(settings, "accounts", "export", "exp", "--output", str(target))
    assert await run.result() == 0 and "wrote auth.json of account exp" in run.err
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    target.write_text("old")
    target.chmod(0o644)
    run = cli(settings, "accounts", "export", "exp", "-o", str(target))
    assert await run.result() == 1 and f"{target} exists; pass --force to overwrite it" in run.err
    assert target.read_text() == "old"
    run = cli(settings, "accounts", "export", "exp", "-o", str(target), "--force")
    assert await run.result() == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    data = json.loads(target.read_text())
    assert data["auth_mode"] == "chatgpt" and data["OPENAI_API_KEY"] is None
    assert data["tokens"] == {"id_token": account.id_token, "access_token": account.access_token,
                              "refresh_token": account.refresh_token, "account_id": "acct-export"}
    assert parse_timestamp(data["last_refresh"]) is not None and data["last_refresh"].endswith("Z")
    assert parse_auth_json(data).tokens.refresh_token == account.refresh_token
    assert_no_secrets(fake, run.output, caplog=caplog)


async def test_export_to_stdout_and_unknown_account(fake: FakeUpstream, settings: Settings, cli) -> None:
    account = fake.add_account(email="stdout@example.com")
    await add_accounts(settings, [account])
    run = cli(settings, "accounts", "export", "stdout@example.com")
    assert await run.result() == 0
    assert json.loads(run.out)["tokens"]["access_token"] == account.access_token
    run = cli(settings, "accounts", "export", "nobody")
    assert await run.result() == 1 and "no account matches 'nobody'" in run.err
