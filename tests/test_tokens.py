"""Unsubscribe tokens: opaque, signed, rotatable, never expiring."""

from __future__ import annotations

import base64
import json
import string

import pytest
from itsdangerous import URLSafeSerializer

from newsletter.errors import InputError
from newsletter.members.tokens import (
    SALT,
    Secrets,
    make_token,
    read_token,
    secrets_from_env,
)

UID = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
KEY = "current-secret-0123456789"
OLD = "retired-secret-0123456789"


def test_a_token_names_the_member_uid_and_the_list() -> None:
    secrets = Secrets(KEY)
    found = read_token(secrets, make_token(secrets, UID, "news"))
    assert found is not None
    assert (found.uid, found.list_name) == (UID, "news")


def test_a_token_carries_no_address_and_no_sequential_id() -> None:
    token = make_token(Secrets(KEY), UID, "news")
    payload, _signature = token.split(".")  # one dot: no timestamp, so no expiry
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert decoded == [UID, "news"]
    assert "@" not in token


def test_changing_any_single_character_makes_the_token_invalid() -> None:
    secrets = Secrets(KEY)
    token = make_token(secrets, UID, "news")
    alphabet = string.ascii_letters + string.digits + "-_."
    for position, original in enumerate(token):
        for replacement in alphabet:
            if replacement == original:
                continue
            tampered = token[:position] + replacement + token[position + 1:]
            assert read_token(secrets, tampered) is None, (position, replacement)


def test_a_token_from_another_key_or_purpose_is_refused() -> None:
    token = make_token(Secrets(KEY), UID, "news")
    assert read_token(Secrets("some-other-secret-012345"), token) is None
    other_purpose = URLSafeSerializer(KEY, salt="confirm-v1").dumps([UID, "news"])
    assert read_token(Secrets(KEY), other_purpose) is None
    assert URLSafeSerializer(KEY, salt=SALT).loads(token) == [UID, "news"]


def test_a_retired_key_verifies_only_while_it_is_listed() -> None:
    old_token = make_token(Secrets(OLD), UID, "news")
    assert read_token(Secrets(KEY, (OLD,)), old_token) is not None
    assert read_token(Secrets(KEY), old_token) is None
    new_token = make_token(Secrets(KEY, (OLD,)), UID, "news")
    assert read_token(Secrets(KEY), new_token) is not None  # signed with the current key


@pytest.mark.parametrize("garbage", ["", "x", "a.b", "..", "%00", "W10.AAAA", "é" * 20,
                                     "A" * 10_000])
def test_garbage_is_not_a_token(garbage: str) -> None:
    assert read_token(Secrets(KEY), garbage) is None


def test_a_well_signed_payload_of_the_wrong_shape_is_not_a_token() -> None:
    signer = URLSafeSerializer(KEY, salt=SALT)
    for payload in ({"s": 1}, [1, "news"], [UID], [UID, ""], ["not-hex", "news"]):
        assert read_token(Secrets(KEY), signer.dumps(payload)) is None


def test_the_secret_comes_from_the_environment_with_old_keys_for_rotation() -> None:
    secrets = secrets_from_env({"NEWSLETTER_SECRET": KEY,
                                "NEWSLETTER_OLD_SECRETS": f" {OLD} , another-old-secret-99 "})
    assert secrets == Secrets(KEY, (OLD, "another-old-secret-99"))
    assert KEY not in repr(secrets) and OLD not in repr(secrets)


def test_a_missing_secret_is_a_clear_error() -> None:
    with pytest.raises(InputError) as caught:
        secrets_from_env({})
    assert str(caught.value) == (
        "environment: NEWSLETTER_SECRET: not set (unsubscribe links are signed with it) "
        "(set it to a random string, e.g. python -c 'import secrets; "
        "print(secrets.token_urlsafe(32))')")


def test_a_short_secret_is_a_clear_error() -> None:
    with pytest.raises(InputError) as caught:
        secrets_from_env({"NEWSLETTER_SECRET": "short", "NEWSLETTER_OLD_SECRETS": "tiny"})
    message = str(caught.value)
    assert message.splitlines()[0].startswith(
        "environment: NEWSLETTER_SECRET: too short (5 characters; at least 16)")
    assert message.splitlines()[1] == (
        "environment: NEWSLETTER_OLD_SECRETS[1]: too short (4 characters; at least 16)")
