"""The service's keys (keys.py): where each comes from, the generated single-node files, and the
refusals (SECURITY-CASES 46 for the files' modes; the real-hub side is in test_security_round2.py).
"""

from __future__ import annotations

import os
import stat

import pytest

from jupyterhub_dataaccess.keys import (
    ENV,
    FILES,
    SERVICE_KEYS,
    KeyConfigError,
    all_audit_keys,
    key_id,
    load_keys,
    read_key,
)

A_KEY = "k" * 32


def mode(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_without_any_key_given_each_is_generated_once_0600_in_a_0700_directory(tmp_path):
    key_dir = str(tmp_path / "keys")
    first = load_keys(key_dir, environ={})
    again = load_keys(key_dir, environ={})
    assert first == again
    assert len({first.mask, first.audit, first.ticket, first.cookie}) == 4
    assert mode(key_dir) == 0o700
    assert sorted(os.listdir(key_dir)) == sorted(FILES[k] for k in SERVICE_KEYS)
    for name in os.listdir(key_dir):
        assert mode(os.path.join(key_dir, name)) == 0o600
    assert first.sources["audit"].startswith("generated file")
    assert again.sources["audit"].startswith("file")
    assert A_KEY not in repr(first) and first.audit.decode() not in repr(first)


def test_the_environment_wins_then_the_file_variable_then_the_key_directory(tmp_path):
    secret_file = tmp_path / "audit"
    secret_file.write_text("hex:" + "ab" * 20 + "\n")
    secret_file.chmod(0o400)
    keys = load_keys(str(tmp_path / "keys"), environ={
        ENV["mask"]: A_KEY, ENV["audit"] + "_FILE": str(secret_file)})
    assert keys.mask == A_KEY.encode() and keys.sources["mask"] == "environment"
    assert keys.audit == bytes.fromhex("ab" * 20)
    assert keys.sources["audit"] == f"file {secret_file}"
    assert not os.path.exists(tmp_path / "keys" / "mask_key")


def test_a_mask_key_an_earlier_release_kept_in_the_database_still_counts(tmp_path):
    keys = load_keys(str(tmp_path), environ={}, legacy_mask=lambda: b"x" * 32)
    assert keys.mask == b"x" * 32 and keys.sources["mask"].startswith("database")
    assert not os.path.exists(tmp_path / "mask_key")
    # but a key given in the environment wins over it
    keys = load_keys(str(tmp_path), environ={ENV["mask"]: A_KEY}, legacy_mask=lambda: b"x" * 32)
    assert keys.mask == A_KEY.encode()


@pytest.mark.parametrize("value, message", [
    ("short", "at least 16 bytes"),
    ("hex:zz", "hex digits"),
])
def test_a_bad_key_is_refused_naming_the_variable(value, message):
    with pytest.raises(KeyConfigError, match=message) as e:
        read_key("audit", environ={ENV["audit"]: value})
    assert ENV["audit"] in str(e.value) and value not in str(e.value).split(":", 1)[0]


def test_a_key_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "cookie"
    path.write_text(A_KEY)
    path.chmod(0o644)
    with pytest.raises(KeyConfigError, match="other users"):
        read_key("cookie", environ={ENV["cookie"] + "_FILE": str(path)})
    with pytest.raises(KeyConfigError, match="cannot read"):
        read_key("cookie", environ={ENV["cookie"] + "_FILE": str(tmp_path / "missing")})


def test_the_command_line_never_generates_an_audit_key_but_finds_old_ones(tmp_path):
    assert all_audit_keys(str(tmp_path), environ={}) == ()
    assert not os.listdir(tmp_path)
    old = "o" * 20 + "\n" + "p" * 20
    keys = all_audit_keys(str(tmp_path), environ={ENV["audit"]: A_KEY,
                                                  "DATAACCESS_AUDIT_KEY_OLD": old})
    assert keys == (A_KEY.encode(), b"o" * 20, b"p" * 20)
    assert key_id(keys[0]) != key_id(keys[1]) and len(key_id(keys[0])) == 16
