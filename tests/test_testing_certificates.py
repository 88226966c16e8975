"""claimgate.testing.certificates: a throw-away CA and a server certificate that strict
verifiers accept, for host names and IP addresses alike."""

import datetime
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from claimgate.testing import make_certificates

NAMES = ["api.test", "localhost", "127.0.0.1", "::1"]


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def handshake(ca: Path, cert: Path, key: Path, server_hostname: str) -> str:
    """A TLS handshake over a socket pair, the client verifying strictly; its TLS version."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert, key)
    client_context = ssl.create_default_context(cafile=str(ca))
    client_context.verify_flags |= ssl.VERIFY_X509_STRICT  # Python 3.13's default
    server_side, client_side = socket.socketpair()
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            with server_context.wrap_socket(server_side, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError) as error:
            errors.append(error)

    server = threading.Thread(target=serve)
    server.start()
    try:
        with client_context.wrap_socket(client_side, server_hostname=server_hostname) as tls:
            version = tls.version()
            tls.sendall(b"x")
    finally:
        client_side.close()
        server.join()
        server_side.close()
    assert not errors, errors
    assert version is not None
    return version


def test_every_name_is_a_subject_alternative_name_once(tmp_path: Path) -> None:
    _, cert, _ = make_certificates(tmp_path, [*NAMES, "localhost", "::1"])

    server = load(cert)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["api.test", "localhost"]
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    common_name = server.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert common_name == "api.test"


@pytest.mark.parametrize("name", NAMES)
def test_a_strict_verifier_accepts_the_certificate_for_each_name(tmp_path: Path, name: str) -> None:
    assert handshake(*make_certificates(tmp_path, NAMES), server_hostname=name).startswith("TLS")


def test_a_name_not_given_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(*make_certificates(tmp_path, ["localhost"]), server_hostname="other.test")


def test_only_the_ca_may_sign_and_it_signed_the_server_certificate(tmp_path: Path) -> None:
    ca_path, cert, _ = make_certificates(tmp_path, NAMES)
    ca, server = load(ca_path), load(cert)

    server.verify_directly_issued_by(ca)
    ca_constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert (ca_constraints.ca, ca_constraints.path_length) == (True, 0)
    assert ca.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not server.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH]
    authority = server.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    subject_key = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert authority.key_identifier == subject_key.digest


def test_the_certificates_are_valid_now(tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.UTC)
    for path in make_certificates(tmp_path, NAMES)[:2]:
        certificate = load(path)
        assert certificate.not_valid_before_utc < now < certificate.not_valid_after_utc


def test_the_key_file_holds_the_server_certificate_s_key_unencrypted(tmp_path: Path) -> None:
    _, cert, key_path = make_certificates(tmp_path, NAMES)

    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert key.public_key() == load(cert).public_key()
    assert key_path.read_text().startswith("-----BEGIN PRIVATE KEY-----")


def test_each_call_makes_a_new_ca(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first_ca, _, _ = make_certificates(tmp_path / "a", NAMES)
    _, second_cert, second_key = make_certificates(tmp_path / "b", NAMES)

    assert load(first_ca).subject != load(second_cert).issuer
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(first_ca, second_cert, second_key, server_hostname="localhost")
