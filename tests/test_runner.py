"""The sidecar's assembly of mitmproxy: its addons, the options its settings imply, and what
``claimgate run`` sets up in its own process."""

import json
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from mitmproxy import certs, options
from mitmproxy.master import Master

from claimgate.runner import mitmproxy_options, proxy_addons
from claimgate.settings import CaptureSettings, ListenAddress, ProxySettings, Settings
from claimgate.testing import ClaimgateProcess, free_port

PROBE_DIR = Path(__file__).with_name("process_probe")


def assembled(settings: Settings) -> Master:
    master = Master(options.Options())
    master.addons.add(*proxy_addons())
    master.options.update(**mitmproxy_options(settings))
    return master


async def test_every_option_the_settings_imply_is_accepted():
    settings = Settings(
        capture=CaptureSettings(
            upstream="http://127.0.0.1:9000", listen=ListenAddress("127.0.0.1", 8081)
        )
    )
    master = assembled(settings)
    assert master.options.mode == list(mitmproxy_options(settings)["mode"])
    assert master.options.stream_large_bodies == str(settings.proxy.max_body_size)


async def test_features_claimgate_does_not_offer_are_not_loaded():
    """Every loaded addon costs time on every request; these would cost it for nothing."""
    master = assembled(Settings())
    for option in ("scripts", "modify_headers", "map_remote", "server_replay", "onboarding"):
        assert option not in master.options
    assert "block_global" in master.options  # kept: refuses clients from public addresses


async def test_the_ca_is_loaded_once(tmp_path):
    """mitmproxy's TlsConfig loads it again when running; claimgate's keeps the first load."""
    master = assembled(Settings(proxy=ProxySettings(ca_dir=tmp_path / "ca")))
    tls = master.addons.get("tlsconfig")
    loaded = tls.certstore
    assert loaded is not None and (tmp_path / "ca" / "mitmproxy-ca.pem").exists()
    tls.running()
    assert tls.certstore is loaded


async def test_the_ca_key_is_loaded_without_the_rsa_proof_and_is_the_key_on_disk(
    tmp_path, monkeypatch
):
    """The proof is cryptography's guard against keys from elsewhere (runner.TlsConfig)."""
    loads = []
    real, mitmproxys_loader = serialization.load_pem_private_key, certs.load_pem_private_key

    def recording(data, password, **options):
        loads.append(options)
        return real(data, password, **options)

    monkeypatch.setattr(serialization, "load_pem_private_key", recording)
    master = assembled(Settings(proxy=ProxySettings(ca_dir=tmp_path / "ca")))
    assert loads == [{"unsafe_skip_rsa_key_validation": True}]
    monkeypatch.undo()
    held = master.addons.get("tlsconfig").certstore.default_privatekey
    on_disk = real((tmp_path / "ca" / "mitmproxy-ca.pem").read_bytes(), None)
    assert held.private_numbers() == on_disk.private_numbers()
    assert certs.load_pem_private_key is mitmproxys_loader  # restored after configure


def test_a_real_sidecar_checks_messages_with_claimgates_check(tmp_path):
    """What ``claimgate run`` does to the process itself, seen in the process at its exit:
    otherwise only ``./dev bench`` and ``./dev footprint`` would notice it missing."""
    config = tmp_path / "claimgate.toml"
    config.write_text(
        f'[proxy]\nlisten = "127.0.0.1:{free_port()}"\nca_dir = "{tmp_path / "ca"}"\n'
        f'[admin]\nlisten = "127.0.0.1:{free_port()}"\n'
    )
    probe = tmp_path / "probe.json"
    env = {"PYTHONPATH": str(PROBE_DIR), "CLAIMGATE_TEST_PROBE": str(probe)}
    with ClaimgateProcess(config, env):
        pass  # ready: every listener bound; leaving stops it with SIGTERM, cleanly
    facts = json.loads(probe.read_text())
    assert facts == {"message_check": "claimgate.message_checks"}
