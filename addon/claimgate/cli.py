"""The ``claimgate`` command line (docs/design.md 3.1).

Exit status: 0 success, 1 a signature that does not verify or a start-up failure, 2 a
configuration or usage error (one line on stderr naming the key and what is wrong).
"""

import argparse
import asyncio
import atexit
import dataclasses
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from claimgate import __version__, collector, signature
from claimgate.fingerprint import fingerprint
from claimgate.settings import CONFIG_VARIABLE, ConfigError, Settings, describe, load_settings

SECRET_PARAMETERS = ("apiClaim", "apiToken", "signature")


class UsageError(Exception):
    """A wrong command line; reported like a configuration error, exit status 2."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except (ConfigError, UsageError) as error:
        print(f"claimgate: {error}", file=sys.stderr)
        return 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="claimgate",
        description="Sidecar that injects the onOffice Marketplace extendedclaim.",
    )
    parser.add_argument("--version", action="version", version=f"claimgate {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="start the sidecar")
    _config_option(run)
    run.add_argument(
        "--watch",
        action="store_true",
        help="reload when the file or a file: secret changes (sets config.watch)",
    )
    run.set_defaults(handler=_run)

    check = commands.add_parser("check-config", help="validate a configuration file")
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_check_config)

    ca = commands.add_parser("ca", help="print the interception CA certificate path")
    _config_option(ca)
    ca.set_defaults(handler=_ca)

    demo = commands.add_parser("demo", help="see claimgate work on loopback in seconds")
    demo.set_defaults(handler=_demo)

    kube = commands.add_parser(
        "kube-inject",
        help="add claimgate to the pod templates of Kubernetes YAML (or take it out)",
        description="Writes the YAML's documents to stdout with claimgate added to every pod "
        "template (Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, also in "
        "a List); notes on stderr.",
    )
    _kube_inject_options(kube)
    kube.set_defaults(handler=_kube_inject)

    for name, handler, text in (
        ("sign-url", _sign_url, "sign a Marketplace link as onOffice does"),
        ("verify-url", _verify_url, "check a Marketplace link signature"),
    ):
        command = commands.add_parser(name, help=text)
        command.add_argument("url")
        command.add_argument(
            "--secret-env",
            required=True,
            metavar="VAR",
            help="environment variable holding the provider secret",
        )
        command.set_defaults(handler=handler)
    return parser


def _config_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--config",
        type=Path,
        default=os.environ.get(CONFIG_VARIABLE) or None,
        help=f"TOML configuration file (default: ${CONFIG_VARIABLE}, else built-in defaults)",
    )


def _settings(path: Path | None) -> Settings:
    return load_settings(path, os.environ)


def _run(args: argparse.Namespace) -> int:
    collector.hold()  # until Claimgate.running: claimgate.collector
    # A SIGHUP from now on reloads, never ends claimgate: until the proxy's loop takes the
    # signal over, one is only remembered (the reload follows once serving).
    hangups: list[int] = []
    signal.signal(signal.SIGHUP, lambda signum, _frame: hangups.append(signum))

    def adjust(settings: Settings) -> Settings:
        if not args.watch:
            return settings
        watching = dataclasses.replace(settings.config, watch=True)
        return dataclasses.replace(settings, config=watching)

    settings = adjust(_settings(args.config))
    from claimgate import lean

    lean.skip_package_inits()
    from mitmproxy.exceptions import OptionsError

    from claimgate import runner, telemetry

    telemetry.configure_logging(settings.log.format, settings.log.level)
    try:
        asyncio.run(runner.serve(settings, args.config, adjust, lambda: bool(hangups)))
    except OptionsError as error:  # mitmproxy refused what the settings asked of it
        raise UsageError(f"mitmproxy: {error}") from None
    # Served and stopped: exit as Python would, but without finalizing the interpreter.
    # mitmproxy_rs's runtime threads may take the GIL while Python 3.12 finalizes, which
    # kills the process with SIGSEGV (mitmproxy/mitmproxy#7409): seen here after a tunnel
    # passed through, in about one stop of three (tests/test_e2e_edge.py). The exit handlers
    # (the last log lines among them) run first, as at any exit.
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _check_config(args: argparse.Namespace) -> int:
    settings = _settings(args.file)
    print(json.dumps(describe(settings), indent=2))
    return 0


def _ca(args: argparse.Namespace) -> int:
    settings = _settings(args.config)
    from mitmproxy.certs import CertStore

    ca_dir = settings.proxy.ca_dir
    ca_dir.mkdir(parents=True, exist_ok=True)
    CertStore.from_store(ca_dir, "mitmproxy", 2048)
    print(ca_dir / "mitmproxy-ca-cert.pem")
    return 0


def _demo(_args: argparse.Namespace) -> int:
    from claimgate.demo import run_demo

    return run_demo()


def _kube_inject_options(command: argparse.ArgumentParser) -> None:
    """Defaults: the names and ports of deploy/kubernetes/ (kube_inject.Options' own)."""
    command.add_argument(
        "-f", "--filename", default="-", metavar="FILE", help="YAML to read (default: -, stdin)"
    )
    command.add_argument("--uninject", action="store_true", help="take claimgate out instead")
    for option, default, metavar, text in (
        ("--config-map", "claimgate-config", "NAME", "ConfigMap holding claimgate.toml"),
        ("--secret", "claimgate-secrets", "NAME", "Secret of claimgate.toml's file: secrets"),
        ("--ca-secret", "claimgate-ca", "NAME", "Secret holding the interception CA's 3 files"),
        ("--image", f"claimgate:{__version__}", "IMAGE", "claimgate's image"),
    ):
        command.add_argument(option, default=default, metavar=metavar, help=f"{text} (%(default)s)")
    for option, port, text in (
        ("--proxy-port", 8080, "forward listener on loopback: the app's HTTPS_PROXY"),
        ("--capture-port", 8081, "capture listener, declared for the Service"),
        ("--admin-port", 8082, "admin listener: the probes"),
    ):
        command.add_argument(
            option, type=int, default=port, metavar="PORT", help=f"{text} (%(default)s)"
        )
    for option, default in (
        ("--requests", "cpu=100m,memory=128Mi"),
        ("--limits", "cpu=1,memory=512Mi"),
    ):
        command.add_argument(
            option,
            default=default,
            metavar="NAME=QUANTITY,...",
            help=f"claimgate's resource {option[2:]} (%(default)s; empty: none)",
        )


def _kube_inject(args: argparse.Namespace) -> int:
    from claimgate import kube_inject  # ruamel.yaml only for this command

    try:
        if args.filename == "-":
            source = sys.stdin.buffer.read(kube_inject.MAX_BYTES + 1)
        else:
            with open(args.filename, "rb") as file:
                source = file.read(kube_inject.MAX_BYTES + 1)
    except OSError as error:
        raise UsageError(f"{args.filename}: {error.strerror}") from None
    try:
        if args.uninject:
            result = kube_inject.uninject(source)
        else:
            options = kube_inject.Options(
                config_map=args.config_map,
                secret=args.secret,
                ca_secret=args.ca_secret,
                image=args.image,
                proxy_port=args.proxy_port,
                capture_port=args.capture_port,
                admin_port=args.admin_port,
                requests=kube_inject.resources(args.requests, "--requests"),
                limits=kube_inject.resources(args.limits, "--limits"),
            )
            result = kube_inject.inject(source, options)
    except kube_inject.InjectError as error:
        raise UsageError(str(error)) from None
    for note in result.notes:
        print(f"claimgate: {note}", file=sys.stderr)
    sys.stdout.buffer.write(result.text.encode())  # UTF-8, as read, whatever the locale
    sys.stdout.flush()
    return 0


def _secret(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        raise UsageError(f"--secret-env: environment variable {var} is not set or empty")
    return value


def _link(url: str) -> str:
    """``url`` if it is an absolute URL, as every Marketplace link is; else a usage error.

    The reasons are fixed texts: urllib's own messages can quote the URL, and with it a claim.
    """
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises for a port that is no number from 0 to 65535
    except ValueError:
        raise UsageError("URL: not a valid URL (check the host's [ ] and the port)") from None
    if not (parts.scheme and parts.hostname):
        raise UsageError(
            "URL: needs a scheme and a host, like https://provider.example/service?..."
        )
    return url


def _sign_url(args: argparse.Namespace) -> int:
    url = _link(args.url)
    try:
        signed = signature.sign_url(url, _secret(args.secret_env))
    except signature.AlreadySigned as error:
        raise UsageError(f"{error}; remove it to sign the link again") from None
    print(signed)
    return 0


def _verify_url(args: argparse.Namespace) -> int:
    url = _link(args.url)
    secret = _secret(args.secret_env)
    base, path, query = signature.split_url(url)
    params = signature.parse_query(query)
    print(f"signed base: {base}{path}")
    for name in sorted(params, key=str.encode):
        print(f"  {name} = {_shown(name, params[name])}")
    timestamp = params.get("timestamp")
    if isinstance(timestamp, str) and timestamp.isdigit():
        print(f"timestamp age: {int(time.time()) - int(timestamp)} s")
    if not isinstance(params.get(signature.SIGNATURE_PARAM), str):
        print("signature: missing (the URL has no signature=<hex> parameter)")
        return 1
    if signature.verify_url(url, secret):
        print("signature: valid")
        return 0
    print("signature: does not match (check the scheme, host, port and path onOffice used)")
    return 1


def _shown(name: str, value: signature.PhpValue) -> str:
    """A parameter as verify-url prints it: a secret one by fingerprint, or not at all."""
    if name not in SECRET_PARAMETERS:
        return repr(value)
    if isinstance(value, str):
        return f"<fp {fingerprint(value)}>"
    return "<an array, not shown>"
