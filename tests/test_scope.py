from claimgate.scope import ApiHosts


def test_bare_host_matches_any_port_case_insensitively():
    hosts = ApiHosts(["api.onoffice.de"])
    assert ("api.onoffice.de", 443) in hosts
    assert ("API.onOffice.DE.", 8443) in hosts
    assert ("evil-api.onoffice.de", 443) not in hosts
    assert ("api.onoffice.de.evil.example", 443) not in hosts


def test_host_with_port_matches_only_that_port():
    hosts = ApiHosts(["localhost:9443", "[::1]:8443"])
    assert ("localhost", 9443) in hosts
    assert ("localhost", 443) not in hosts
    assert ("::1", 8443) in hosts
