"""Start-up probe: where the seconds go between exec and ready, in the real process.

``benchmarks/footprint.py`` puts this directory on ``PYTHONPATH`` of an unchanged
``claimgate run`` or ``mitmdump`` and sets ``FOOTPRINT_PROBE_OUT``; Python's ``site`` then
imports this module once its own start-up (the interpreter, ``site``, the ``.pth`` files) is
done. Without ``FOOTPRINT_PROBE_OUT`` it does nothing.

It records, on the clock ``time.monotonic`` reads in every process (CLOCK_MONOTONIC):

- every import, with its start and end: ``_find_and_load`` of the frozen importlib is
  wrapped, through which every import of a module not loaded yet passes, those through
  ``importlib.import_module`` included (``-X importtime`` does not list those, and counts
  them in the importer's own time: tornado's package imports ``tornado.web`` that way);
- the calls listed in ``CALLS``, wrapped as their module is loaded: settings, mitmproxy's
  master and options, the CA, the listeners, the admin server, ``gc.collect``/``gc.freeze``;
- every run of the cyclic garbage collector (``gc.callbacks``), the automatic ones included;
- the resident memory before and after each import and after each timed call.

At exit (SIGTERM ends both programs cleanly) it writes JSON to ``FOOTPRINT_PROBE_OUT``. It
imports nothing the programs would not import anyway, except ``json`` at exit.
"""

import _frozen_importlib as bootstrap
import _thread
import atexit
import gc
import os
import time

OUT = os.environ.get("FOOTPRINT_PROBE_OUT")

CALLS: dict[str, tuple[tuple[str, str, str], ...]] = {
    # module: ((object, attribute, label), ...); object "" is the module itself
    "claimgate.settings": (("", "load_settings", "load_settings"),),
    "claimgate.telemetry": (("", "configure_logging", "configure_logging"),),
    "claimgate.lean": (("", "skip_package_inits", "lean.skip_package_inits"),),
    "claimgate.runner": (
        ("", "serve", "runner.serve"),
        ("", "make_store", "make_store"),
        ("", "close_connections", "close_connections"),
    ),
    "claimgate.addon": (
        ("Claimgate", "__init__", "Claimgate()"),
        ("Claimgate", "running", "Claimgate.running"),
    ),
    "claimgate.admin": (("AdminServer", "start", "AdminServer.start"),),
    "claimgate.oversize": (("Oversize", "start", "Oversize.start"),),
    "claimgate.reloader": (("Reloader", "__init__", "Reloader()"),),
    "mitmproxy.master": (
        ("Master", "__init__", "Master()"),
        ("Master", "run", "Master.run"),
        ("Master", "running", "running hooks"),
    ),
    "mitmproxy.addonmanager": (("AddonManager", "add", "addons.add"),),
    "mitmproxy.optmanager": (
        ("OptManager", "update", "options.update"),
        ("OptManager", "set", "options.set"),
        ("", "load_paths", "optmanager.load_paths"),
    ),
    "mitmproxy.certs": (("CertStore", "from_store", "CertStore.from_store"),),
    "mitmproxy.addons.proxyserver": (("Proxyserver", "setup_servers", "setup_servers"),),
    "mitmproxy.addons.tlsconfig": (("TlsConfig", "running", "TlsConfig.running"),),
    "mitmproxy.tools.main": (
        ("", "run", "mitmproxy.tools.main.run"),
        ("", "process_options", "process_options"),
    ),
    "mitmproxy.tools.cmdline": (("", "mitmdump", "cmdline parser"),),
    "mitmproxy.tools.dump": (("DumpMaster", "__init__", "DumpMaster()"),),
    "ssl": (("", "create_default_context", "ssl.create_default_context"),),
}
"""What to time; the labels are what footprint.py's breakdown names."""
TRIALS = frozenset(filter(None, os.environ.get("FOOTPRINT_TRY", "").split(",")))
"""Cuts tried out without changing the programs (``FOOTPRINT_TRY``, comma-separated):
``gc-off``, no automatic collection (the collector disabled from here on); ``no-collect``,
``gc.collect()`` does nothing; ``ca-once``, mitmproxy's TlsConfig does not load the CA a
second time when running; ``ca-unchecked``, the CA's RSA key is loaded without
cryptography's consistency check of the key (``unsafe_skip_rsa_key_validation``)."""

_CO_COROUTINE = 0x80

started = time.monotonic()
_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


_STATM = os.open("/proc/self/statm", os.O_RDONLY) if OUT else -1


def _rss_kib() -> int:
    """Resident set size now (``/proc/self/statm``, read again at offset 0: 2 us)."""
    return int(os.pread(_STATM, 200, 0).split()[1]) * _PAGE_KIB


started_rss = _rss_kib() if OUT else 0
imports: list[tuple[str, int, float, float, int, int, int]] = []
"""(module, thread, start, end, nesting depth, RSS KiB before, after) of every import, in the
order they ended."""
calls: list[tuple[str, float, float, int]] = []
"""(label, start, end, RSS KiB after) of every timed call, in the order they ended."""
_depth: dict[int, int] = {}


def _wrap_function(function, label):
    if function.__code__.co_flags & _CO_COROUTINE:

        async def timed(*args, **kwargs):
            start = time.monotonic()
            try:
                return await function(*args, **kwargs)
            finally:
                calls.append((label, start, time.monotonic(), _rss_kib()))

    else:

        def timed(*args, **kwargs):
            start = time.monotonic()
            try:
                return function(*args, **kwargs)
            finally:
                calls.append((label, start, time.monotonic(), _rss_kib()))

    for name in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(timed, name, getattr(function, name))
    timed.__wrapped__ = function
    return timed


def _patch(module, owner_name: str, attribute: str, label: str) -> None:
    owner = getattr(module, owner_name) if owner_name else module
    raw = owner.__dict__.get(attribute) if isinstance(owner, type) else getattr(owner, attribute)
    if raw is None:
        return
    if isinstance(raw, classmethod):
        setattr(owner, attribute, classmethod(_wrap_function(raw.__func__, label)))
    elif isinstance(raw, staticmethod):
        setattr(owner, attribute, staticmethod(_wrap_function(raw.__func__, label)))
    else:
        setattr(owner, attribute, _wrap_function(raw, label))


def _wrap_builtin(module, attribute: str, label: str, skip: bool = False) -> None:
    function = getattr(module, attribute)

    def timed(*args, **kwargs):
        start = time.monotonic()
        try:
            return None if skip else function(*args, **kwargs)
        finally:
            calls.append((label, start, time.monotonic(), _rss_kib()))

    setattr(module, attribute, timed)


collections: list[tuple[int, float, float]] = []
"""(generation, start, end) of every collection of the cyclic garbage collector."""
_collecting: list[float] = []


def _on_collection(phase: str, info: dict) -> None:
    if phase == "start":
        _collecting.append(time.monotonic())
    elif _collecting:
        collections.append((info["generation"], _collecting.pop(), time.monotonic()))


def _try_out(name: str, module) -> None:
    """Apply the ``TRIALS`` that concern module ``name``, just loaded."""
    if name == "mitmproxy.addons.tlsconfig" and "ca-once" in TRIALS:
        module.TlsConfig.running = lambda self: None
    if name == "mitmproxy.certs" and "ca-unchecked" in TRIALS:
        serialization = module.serialization

        def load_pem_private_key(data, password):
            try:
                return serialization.load_pem_private_key(
                    data, password, unsafe_skip_rsa_key_validation=True
                )
            except TypeError:  # as mitmproxy's own: a key without a password
                return serialization.load_pem_private_key(
                    data, None, unsafe_skip_rsa_key_validation=True
                )

        module.load_pem_private_key = load_pem_private_key


_find_and_load = bootstrap._find_and_load


def _timed_find_and_load(name, import_):
    thread = _thread.get_ident()
    depth = _depth.get(thread, 0)
    _depth[thread] = depth + 1
    rss = _rss_kib()
    start = time.monotonic()
    try:
        module = _find_and_load(name, import_)
    finally:
        end = time.monotonic()
        imports.append((name, thread, start, end, depth, rss, _rss_kib()))
        _depth[thread] = depth
    if TRIALS:
        _try_out(name, module)
    for owner, attribute, label in CALLS.get(name, ()):
        try:  # noqa: SIM105 (contextlib is not imported here: the programs' own imports)
            _patch(module, owner, attribute, label)
        except (AttributeError, TypeError):  # another version of the program: skip it
            pass
    return module


def _write() -> None:
    import json  # at exit only: the programs import it anyway, but later than this

    bootstrap._find_and_load = _find_and_load
    report = {
        "t0": float(os.environ.get("FOOTPRINT_T0", "nan")),
        "probe_start": started,
        "probe_start_rss_kib": started_rss,
        "end": time.monotonic(),
        "main_thread": _thread.get_ident(),
        "imports": imports,
        "calls": calls,
        "collections": collections,
        "trials": sorted(TRIALS),
    }
    with open(OUT, "w") as out:
        json.dump(report, out)


if OUT:
    bootstrap._find_and_load = _timed_find_and_load
    _wrap_builtin(gc, "collect", "gc.collect", skip="no-collect" in TRIALS)
    _wrap_builtin(gc, "freeze", "gc.freeze")
    gc.callbacks.append(_on_collection)
    if "gc-off" in TRIALS:
        gc.disable()
    atexit.register(_write)
