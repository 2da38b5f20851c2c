"""Keyturn names <-> Key Vault names: reversible, case-safe, within 127 characters."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rotation.errors import ConfigurationError, InvalidSecretName
from rotation.names import MAX_NAME_LENGTH, validate_name
from rotation.providers.azure.names import (
    MAX_AZURE_NAME_LENGTH,
    PENDING_SUFFIX,
    NameMapper,
    decode,
    encode,
)

AZURE_NAME = re.compile(r"[0-9a-zA-Z-]{1,127}")

_segment = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,11}", fullmatch=True)
valid_names = (
    st.lists(_segment, min_size=1, max_size=4)
    .map("/".join)
    .filter(lambda n: len(n) <= MAX_NAME_LENGTH)
)


@given(valid_names)
def test_round_trip(name: str) -> None:
    validate_name(name)
    mapped = encode(name)
    assert decode(mapped) == name


@given(valid_names)
def test_mapped_names_are_lowercase_key_vault_names(name: str) -> None:
    mapped = encode(name)
    assert mapped == mapped.lower()
    assert re.fullmatch(r"[0-9a-z-]+", mapped)


@given(valid_names, valid_names)
def test_distinct_names_never_share_a_key_vault_name(a: str, b: str) -> None:
    if a != b:
        # Key Vault compares case-insensitively: the lowercase spellings must differ.
        assert encode(a).lower() != encode(b).lower()


@given(valid_names)
def test_case_variants_stay_distinct(name: str) -> None:
    for variant in {name.upper(), name.lower(), name.swapcase()} - {name}:
        assert encode(variant) != encode(name)


@given(valid_names, valid_names)
def test_a_pending_sibling_is_never_a_user_secret(a: str, b: str) -> None:
    mapper = NameMapper("kt-")
    if len(encode(a)) <= mapper.max_mapped:
        sibling = mapper.pending_of(a)
        assert mapper.from_azure(sibling) is None
        if len(encode(b)) <= mapper.max_mapped:
            assert sibling != mapper.to_azure(b)


@given(valid_names)
def test_decode_accepts_any_case_from_the_vault(name: str) -> None:
    # Key Vault may hand names back in the case another tool created them with.
    assert decode(encode(name).upper()) == name


def test_examples() -> None:
    assert encode("db_password") == "db-1password"
    assert encode("app/DB_password.v2") == "app-3-d-b-1password-2v2"
    assert encode("api-key") == "api-0key"
    assert encode("A") == "-a" and encode("a") == "a"
    assert decode("Db-1Password") == "db_password"


@pytest.mark.parametrize(
    "azure_name",
    ["bad-", "a-9p", "x-9", "-", "a--b", "-2hidden", "a-3-3b", "a-3"],
)
def test_foreign_or_internal_names_do_not_decode(azure_name: str) -> None:
    assert decode(azure_name) is None


def test_prefix_is_applied_and_stripped() -> None:
    mapper = NameMapper("Team1-")
    assert mapper.prefix == "team1-"
    assert mapper.to_azure("db_password") == "team1-db-1password"
    assert mapper.from_azure("TEAM1-db-1password") == "db_password"
    assert mapper.from_azure("team2-db-1password") is None
    assert mapper.from_azure("db-1password") is None


@pytest.mark.parametrize("prefix", ["has_underscore", "dot.", "slash/", "x" * 65, "sp ace"])
def test_bad_prefixes_are_configuration_errors(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="AZURE_SECRETS_PREFIX"):
        NameMapper(prefix)


def test_length_limit_counts_the_prefix_and_the_sibling_suffix() -> None:
    mapper = NameMapper("")
    limit = MAX_AZURE_NAME_LENGTH - len(PENDING_SUFFIX)
    longest = "a" * limit
    assert mapper.to_azure(longest) == longest
    assert AZURE_NAME.fullmatch(mapper.pending_of(longest))
    with pytest.raises(InvalidSecretName, match="maps to 125 characters"):
        mapper.to_azure("a" * (limit + 1))
    # Escaped characters take two: 62 capitals map to 124, 63 to 126.
    assert len(mapper.to_azure("A" * 62)) == 124
    with pytest.raises(InvalidSecretName, match="shorter name"):
        mapper.to_azure("A" * 63)
    prefixed = NameMapper("p" * 10)
    assert prefixed.max_mapped == limit - 10
    with pytest.raises(InvalidSecretName):
        prefixed.to_azure("a" * (limit - 9))


@given(valid_names)
def test_every_accepted_name_yields_valid_key_vault_names(name: str) -> None:
    mapper = NameMapper("kt-")
    try:
        main = mapper.to_azure(name)
    except InvalidSecretName:
        assert len(encode(name)) > mapper.max_mapped
        return
    assert AZURE_NAME.fullmatch(main)
    assert AZURE_NAME.fullmatch(mapper.pending_of(name))
    assert mapper.from_azure(main) == name


@pytest.mark.parametrize("bad", ["", "../x", "a//b", ".hidden", "sp ace", "x" * 300])
def test_invalid_keyturn_names_are_refused(bad: str) -> None:
    with pytest.raises(InvalidSecretName):
        NameMapper("").to_azure(bad)
