"""Pure scaling logic: business hours (DST), cooldown, bounds, placement, choice of the replica to remove."""
from datetime import datetime
from zoneinfo import ZoneInfo

from alertscale.scaler import in_business_hours, pick_victim, place, refusal

UTC_HOURS = {"start": "09:00", "end": "17:00", "timezone": "UTC", "days": ["mon", "tue", "wed", "thu", "fri"]}
BERLIN = dict(UTC_HOURS, timezone="Europe/Berlin")
SVC = {"business_hours_only": True, "cooldown_period": 60, "min_replicas": 1, "max_replicas": 3,
       "max_per_server": 2}


def at(text, zone="UTC"):
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp()


def test_business_hours_edges_utc():
    assert not in_business_hours(at("2026-12-01 08:59:59"), UTC_HOURS)  # a Tuesday
    assert in_business_hours(at("2026-12-01 09:00"), UTC_HOURS)
    assert in_business_hours(at("2026-12-01 16:59:59"), UTC_HOURS)
    assert not in_business_hours(at("2026-12-01 17:00"), UTC_HOURS)
    assert not in_business_hours(at("2026-12-05 12:00"), UTC_HOURS)  # a Saturday


def test_business_hours_follow_dst_in_the_zone():
    # Europe/Berlin moves to summer time on 2027-03-28: 09:00 local is 08:00 UTC before, 07:00 UTC after.
    assert in_business_hours(at("2027-03-26 08:00", "UTC"), BERLIN)
    assert not in_business_hours(at("2027-03-26 07:59", "UTC"), BERLIN)
    assert in_business_hours(at("2027-03-29 07:00", "UTC"), BERLIN)
    assert not in_business_hours(at("2027-03-29 06:59", "UTC"), BERLIN)
    assert not in_business_hours(at("2027-03-29 15:00", "UTC"), BERLIN)  # 17:00 local


def test_refusals_in_order():
    inside, outside = at("2026-12-01 10:00"), at("2026-12-01 20:00")
    assert refusal("up", SVC, 1, None, inside, False, UTC_HOURS) is None
    assert refusal("up", SVC, 1, None, outside, False, UTC_HOURS).startswith("outside business hours")
    assert refusal("up", SVC, 1, None, outside, True, UTC_HOURS) is None  # manual: any time
    assert refusal("up", SVC, 1, inside - 30, inside, False, UTC_HOURS).startswith("cooldown: last action 30s ago")
    assert refusal("up", SVC, 1, inside - 60, inside, False, UTC_HOURS) is None
    assert refusal("up", SVC, 1, inside - 30, inside, True, UTC_HOURS) is None  # manual: inside cooldown too
    assert refusal("up", SVC, 3, None, inside, True, UTC_HOURS) == "at max_replicas (3)"
    assert refusal("down", SVC, 1, None, inside, True, UTC_HOURS) == "at min_replicas (1)"
    assert refusal("down", SVC, 2, None, inside, False, UTC_HOURS) is None
    always = dict(SVC, business_hours_only=False)
    assert refusal("up", always, 1, None, outside, False, UTC_HOURS) is None


SERVERS = [{"name": n, "max_containers": 3} for n in ("a", "b", "c")]
UP = {"a": True, "b": True, "c": True}


def test_place_prefers_fewest_replicas_then_fewest_containers_then_name():
    assert place(SVC, SERVERS, {}, {}, UP) == "a"
    assert place(SVC, SERVERS, {"a": 1}, {"a": 1}, UP) == "b"
    assert place(SVC, SERVERS, {"a": 1}, {"a": 1, "b": 2}, UP) == "c"
    assert place(SVC, SERVERS, {"a": 1, "b": 1, "c": 1}, {"a": 3, "b": 1, "c": 2}, UP) == "b"


def test_place_skips_unreachable_and_full_servers():
    assert place(SVC, SERVERS, {}, {}, {"a": False, "b": True, "c": True}) == "b"
    assert place(SVC, SERVERS, {}, {"a": 3, "b": 3}, UP) == "c"  # max_containers
    assert place(SVC, SERVERS, {"a": 2, "b": 2, "c": 2}, {}, UP) is None  # max_per_server
    assert place(SVC, SERVERS, {}, {}, {}) is None


def test_victim_is_newest_on_the_most_loaded_server():
    replicas = [{"server": "a", "created": "1"}, {"server": "b", "created": "2"},
                {"server": "b", "created": "3"}, {"server": "a", "created": "4"}, {"server": "a", "created": "0"}]
    assert pick_victim(replicas) == {"server": "a", "created": "4"}
    assert pick_victim(replicas, prefer_servers={"b"}) == {"server": "b", "created": "3"}
    assert pick_victim([]) is None
