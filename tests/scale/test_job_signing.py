"""Queue items are signed: a worker refuses one whose author (is_admin), place or text was forged or
altered in Redis. Keys come from PARLEY_CREDENTIALS_KEYS (the newest signs, any verifies: rotation)."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr

from core.ops.jobs import Job, JobSigner, Route, decode_job, encode_job
from core.types import Author, CommandCall, Place, Turn


def signer(*keys: bytes) -> JobSigner:
    return JobSigner.from_keys(SecretStr(",".join(k.decode() for k in keys)))


def job(*, admin: bool = False) -> Job:
    turn = Turn(
        Author("U1", "Ada", is_admin=admin),
        Place("slack", "T1", "C1", "1.2"),
        '/resume "quoted", with ,"s":"tricks"}',
        command=CommandCall("resume", ""),
    )
    return Job(turn, Route("slack", {"kind": "command", "channel": "C1"}))


def test_a_signed_item_round_trips_and_a_forged_admin_is_refused() -> None:
    s = signer(Fernet.generate_key())
    original = job()
    raw = encode_job(original, s)
    assert decode_job(raw, s).turn == original.turn
    forged = raw.replace('"Ada",false,false]', '"Ada",false,true]')  # is_admin flipped in Redis
    assert forged != raw
    with pytest.raises(ValueError, match="signature"):
        decode_job(forged, s)
    unsigned = encode_job(job(admin=True))  # written by someone without the key
    with pytest.raises(ValueError, match="signature"):
        decode_job(unsigned, s)
    other = signer(Fernet.generate_key())
    with pytest.raises(ValueError, match="signature"):
        decode_job(encode_job(job(admin=True), other), s)


def test_rotation_accepts_items_signed_with_an_older_key() -> None:
    old, new = Fernet.generate_key(), Fernet.generate_key()
    queued_before = encode_job(job(admin=True), signer(old))
    assert decode_job(queued_before, signer(new, old)).turn.author.is_admin
    with pytest.raises(ValueError, match="signature"):
        decode_job(queued_before, signer(new))  # once the old key is dropped


def test_without_keys_items_are_neither_signed_nor_checked() -> None:
    none = JobSigner.from_keys(None)
    assert not none.enabled
    raw = encode_job(job(admin=True), none)
    assert "s" not in json.loads(raw)
    assert decode_job(raw, none).turn.author.is_admin
    assert decode_job(raw).turn.author.is_admin
