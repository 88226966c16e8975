"""The command line, run as users run it: a real subprocess, its exit status and its output."""

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from claimgate import __version__ as claimgate_version
from claimgate import signature
from claimgate.fingerprint import fingerprint
from claimgate.settings import SECTIONS, keys
from claimgate.testing import make_claim, make_secret, make_token
from tests.support import claimgate_command

SECRET = make_secret()
URL = "https://provider.example:8443/service?customerWebId=21312&userId=17&timestamp=1700000000"


def claimgate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLAIMGATE_")}
    return subprocess.run(
        [*claimgate_command(), *args],
        env=full_env | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_prints_effective_settings_with_secrets_masked(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text(
        '[capture]\nupstream = "http://127.0.0.1:9000"\nprovider_secret = "env:PS"\n'
        '[policy]\nmode = "enforce"\n'
    )
    result = claimgate("check-config", str(config), env={"PS": SECRET})
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective["policy"]["mode"] == "enforce"
    assert effective["capture"]["listen"] == "127.0.0.1:8081"
    assert SECRET not in result.stdout
    assert effective["capture"]["provider_secret"] == [f"<secret fp={fingerprint(SECRET)}>"]


def test_check_config_prints_every_declared_key_and_no_other():
    example = Path(__file__).resolve().parents[1] / "config" / "claimgate.example.toml"
    result = claimgate("check-config", str(example))
    assert result.returncode == 0, result.stderr
    effective = json.loads(result.stdout)
    assert effective.pop("customers") == []
    assert {name: list(table) for name, table in effective.items()} == {
        name: list(keys(section)) for name, section in SECTIONS.items()
    }


def test_a_wrong_value_is_one_line_naming_the_key_and_exit_2(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text('[capture]\nmax_age = "ten minutes"\n')
    for command in (["check-config", str(config)], ["run", "--config", str(config)]):
        result = claimgate(*command)
        assert result.returncode == 2
        assert result.stderr.count("\n") == 1
        assert result.stderr.startswith("claimgate: capture.max_age: ")


def test_environment_errors_are_reported_the_same_way():
    result = claimgate("run", env={"CLAIMGATE_POLICY_MODE": "bogus"})
    assert result.returncode == 2
    assert result.stderr.startswith("claimgate: policy.mode: ")


def test_ca_prints_the_certificate_path_and_creates_it(tmp_path: Path):
    result = claimgate("ca", env={"CLAIMGATE_PROXY_CA_DIR": str(tmp_path / "ca")})
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.strip())
    assert path == tmp_path / "ca" / "mitmproxy-ca-cert.pem"
    assert path.read_text().startswith("-----BEGIN CERTIFICATE-----")


def test_sign_url_then_verify_url_round_trip():
    claim = make_claim()
    url = f"{URL}&apiClaim={claim.replace('+', '%2B').replace('/', '%2F').replace('=', '%3D')}"
    signed = claimgate("sign-url", url, "--secret-env", "PS", env={"PS": SECRET})
    assert signed.returncode == 0, signed.stderr
    assert signature.verify_url(signed.stdout.strip(), SECRET)

    verified = claimgate(
        "verify-url", signed.stdout.strip(), "--secret-env", "PS", env={"PS": SECRET}
    )
    assert verified.returncode == 0
    assert "signature: valid" in verified.stdout
    assert "https://provider.example:8443/service" in verified.stdout
    assert claim not in verified.stdout and signed.stdout.strip()[-64:] not in verified.stdout

    wrong = claimgate("verify-url", signed.stdout.strip(), "--secret-env", "PS", env={"PS": "x"})
    assert wrong.returncode == 1
    assert "does not match" in wrong.stdout


CLAIM = make_claim()
ENCODED_CLAIM = CLAIM.replace("+", "%2B").replace("/", "%2F").replace("=", "%3D")
BROKEN_URLS = (
    "not a url",
    f"http://[::1/service?apiClaim={ENCODED_CLAIM}",
    f"https://provider.example:80a/service?apiClaim={ENCODED_CLAIM}",
    "/service?customerWebId=21312",
    "https://:8443/service",
    "provider.example/service",
)


@pytest.mark.parametrize("command", ["sign-url", "verify-url"])
@pytest.mark.parametrize("url", BROKEN_URLS)
def test_a_broken_url_is_one_line_and_exit_2(command: str, url: str):
    result = claimgate(command, url, "--secret-env", "PS", env={"PS": SECRET})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("claimgate: URL: ")
    assert CLAIM not in result.stderr and SECRET not in result.stderr


def test_sign_url_refuses_a_signed_url_in_one_line():
    signed = signature.sign_url(f"{URL}&apiClaim={ENCODED_CLAIM}", SECRET)
    result = claimgate("sign-url", signed, "--secret-env", "PS", env={"PS": SECRET})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1
    assert "already carries a signature" in result.stderr
    for secret in (CLAIM, SECRET, signed[-64:]):
        assert secret not in result.stderr


def test_verify_url_says_when_the_signature_is_missing():
    for unsigned in (URL, f"{URL}&signature[]=0123abcd"):
        result = claimgate("verify-url", unsigned, "--secret-env", "PS", env={"PS": SECRET})
        assert result.returncode == 1
        assert "signature: missing" in result.stdout
        assert "does not match" not in result.stdout and "0123abcd" not in result.stdout


def test_verify_url_never_prints_a_secret_parameter_even_as_an_array():
    token = make_token()
    url = signature.sign_url(f"{URL}&apiClaim[]={ENCODED_CLAIM}&apiToken[x]={token}", SECRET)
    result = claimgate("verify-url", url, "--secret-env", "PS", env={"PS": SECRET})
    assert result.returncode == 0, result.stderr
    assert "apiClaim = " in result.stdout and "apiToken = " in result.stdout
    for secret in (CLAIM, token, url[-64:], SECRET):
        assert secret not in result.stdout


def test_missing_secret_variable_is_a_usage_error():
    result = claimgate("sign-url", URL, "--secret-env", "NOT_SET_ANYWHERE")
    assert result.returncode == 2
    assert "NOT_SET_ANYWHERE" in result.stderr


def test_run_fails_clearly_when_a_port_is_taken(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = claimgate(
            "run",
            env={
                "CLAIMGATE_PROXY_LISTEN": f"127.0.0.1:{port}",
                "CLAIMGATE_PROXY_CA_DIR": str(tmp_path),
                "CLAIMGATE_LOG_FORMAT": "json",
            },
        )
    assert result.returncode == 1
    assert "Address already in use" in result.stderr or "address already in use" in result.stderr


def test_python_dash_m_is_the_same_command():
    result = subprocess.run(
        [sys.executable, "-m", "claimgate", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("run", "check-config", "ca", "sign-url", "verify-url"):
        assert command in result.stdout


def test_version_prints_the_package_version_and_exits_0():
    result = claimgate("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"claimgate {claimgate_version}\n"
    assert re.fullmatch(r"\d+\.\d+\.\d+", claimgate_version)


def test_the_config_variable_names_the_file_and_is_no_setting(tmp_path: Path):
    """``$CLAIMGATE_CONFIG`` looks like a key of ``[config]``; it is the file's path."""
    config = tmp_path / "c.toml"
    config.write_text(f"[proxy]\nca_dir = '{tmp_path / 'named'}'\n")
    result = claimgate("ca", env={"CLAIMGATE_CONFIG": str(config)})
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"{tmp_path / 'named' / 'mitmproxy-ca-cert.pem'}\n"
