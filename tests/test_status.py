from claimgate.activity import Activity
from claimgate.fingerprint import fingerprint
from claimgate.lifetime import Lifetime
from claimgate.policy import Decision, Kind
from claimgate.status import MAX_ROWS, claim_report, status_report
from claimgate.store import Claim

NOW = 1_800_000_000.0


def report(claims, activity=None, **kw):
    return status_report(
        claims=claims,
        activity=activity or Activity(lambda: NOW),
        listeners={"admin": "x"},
        mode="inject",
        ready=True,
        ttl=3600,
        now=NOW,
        **kw,
    )


def test_claim_report_names_the_claim_by_fingerprint():
    row = claim_report(Claim("1", "17", "secret-claim", int(NOW) - 4000), NOW, 3600)
    assert row["claim_fp"] == fingerprint("secret-claim")
    assert "secret-claim" not in repr(row)
    assert (row["claim_age"], row["expires_in"], row["expired"]) == (4000, -400, True)


def test_customers_with_claims_or_violations_appear_newest_first():
    activity = Activity(lambda: NOW)
    activity.violation("missing_claim", "no-claim")
    status = report(
        [Claim("old", "1", "a", int(NOW) - 900), Claim("new", "2", "b", int(NOW) - 5)], activity
    )
    assert [r["customer"] for r in status["customers"]] == ["no-claim", "new", "old"]
    no_claim = status["customers"][0]
    assert no_claim["claim_fp"] is None and no_claim["last_violation"] == {
        "kind": "missing_claim",
        "age": 0,
    }
    assert status["violations_last_hour"]["missing_claim"] == 1
    assert set(status["violations_last_hour"]) == {k.value for k in Kind}
    assert set(status["decisions_last_hour"]) == {d.value for d in Decision}
    assert status["recent_violations"] == [
        {"kind": "missing_claim", "customer": "no-claim", "age": 0}
    ]


def test_rows_are_capped():
    claims = [Claim(str(i), "u", f"c{i}", int(NOW) - i) for i in range(MAX_ROWS + 50)]
    status = report(claims)
    assert len(status["customers"]) == MAX_ROWS
    assert status["customers_total"] == MAX_ROWS + 50
    assert status["customers"][0]["customer"] == "0"


def test_each_row_says_whether_its_claim_is_expiring_or_refused():
    claims = [
        Claim("fresh", "1", "a", int(NOW) - 60),
        Claim("expiring", "1", "b", int(NOW) - 3300),
        Claim("refused", "1", "c", int(NOW) - 60, refused=True),
    ]
    rows = {r["customer"]: r for r in report(claims, warn_before=600)["customers"]}
    standings = {c: (r["expiring"], r["expired"], r["refused"]) for c, r in rows.items()}
    assert standings == {
        "fresh": (False, False, False),
        "expiring": (True, False, False),
        "refused": (False, True, True),
    }
    assert rows["expiring"]["expires_in"] == 300


def test_the_lifetime_is_what_this_process_learnt():
    lifetime = Lifetime(ttl=3600)
    assert report([], lifetime=lifetime)["lifetime"] == {
        "shortest_refused_age": None,
        "longest_accepted_age": None,
    }
    lifetime.accepted(1200.4)
    lifetime.refused(3000, NOW)
    assert report([], lifetime=lifetime)["lifetime"] == {
        "shortest_refused_age": 3000,
        "longest_accepted_age": 1200,
    }


def test_the_configuration_is_the_one_given():
    given = {"fingerprint": "c0ffee123abc", "loaded_at": NOW - 1200.25}
    status = report([], config=given)
    assert status["config"] == given and status["config"] is not given
    assert report([])["config"] == {"fingerprint": None, "loaded_at": None}
    assert report([], config={"fingerprint": "c0ffee123abc"})["config"] == {
        "fingerprint": "c0ffee123abc",
        "loaded_at": None,
    }


def test_the_configuration_changes_no_other_field():
    given = {"fingerprint": "c0ffee123abc", "loaded_at": NOW, "path": "/etc/claimgate.toml"}
    activity = Activity(lambda: NOW)
    activity.violation("missing_claim", "1")
    claims = [Claim("2", "17", "a", int(NOW) - 60)]
    status = report(claims, activity, config=given)
    assert set(status["config"]) == {"fingerprint", "loaded_at"}  # nothing else it was given
    assert {k: v for k, v in status.items() if k != "config"} == {
        k: v for k, v in report(claims, activity).items() if k != "config"
    }


def test_the_version_and_the_ca_s_expiry_are_reported_as_given():
    assert (report([])["version"], report([])["ca_expires_at"]) == (None, None)
    given = report([], version="0.1.0", ca_expires_at=2_100_000_000.0)
    assert (given["version"], given["ca_expires_at"]) == ("0.1.0", 2_100_000_000.0)
