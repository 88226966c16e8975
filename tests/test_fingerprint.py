import hashlib

from claimgate.fingerprint import fingerprint


def test_fingerprint_is_the_start_of_the_sha256():
    assert fingerprint("secret") == hashlib.sha256(b"secret").hexdigest()[:12]
    assert fingerprint(b"secret") == fingerprint("secret")
    assert fingerprint("a") != fingerprint("b")


def test_a_lone_surrogate_has_a_fingerprint_of_its_own():
    assert fingerprint("a\udcff") != fingerprint("a\udcfe")
    assert len(fingerprint("\ud800")) == 12
