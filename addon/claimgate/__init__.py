"""claimgate: make legacy onOffice Marketplace integrations send the right ``extendedclaim``.

A mitmproxy addon run as a sidecar. See ``docs``/README for the whole picture; the pure
modules (``onoffice``, ``signature``, ``capture``, ``rewrite``, ``policy``) know nothing of
mitmproxy, and ``addon`` is the only module that touches flows.
"""

__version__ = "0.1.0"
