from services.common.live_config import LiveConfig


def test_environment_overrides_defaults_with_the_default_type():
    live = LiveConfig("planner", {"budget": 1.0, "name": "x", "on": True}, {"budget": "2", "on": "false"})
    assert live.get("budget") == 2.0 and isinstance(live.get("budget"), float)
    assert live.get("on") is False
    assert live.get("name") == "x"


def test_a_bad_value_is_refused_and_the_last_good_value_stays():
    live = LiveConfig("planner", {"budget": 1.0})
    assert live.apply("budget", "3.5")
    assert not live.apply("budget", "lots")
    assert not live.apply("budget", "true")
    assert live.get("budget") == 3.5


def test_deleting_a_key_restores_the_default_and_subscribers_hear_every_change():
    heard = []
    live = LiveConfig("planner", {"budget": 1.0})
    live.subscribe(lambda key, value: heard.append((key, value)))
    live.apply("budget", "4")
    live.apply("budget", None)
    assert live.get("budget") == 1.0
    assert heard == [("budget", 4.0), ("budget", 1.0)]


def test_structured_keys_without_default_are_kept_as_json():
    live = LiveConfig("planner", {"policy_overrides": {}})
    assert live.apply("policy_overrides", '{"OUT_OF_MEMORY": {"max_attempts": 1}}')
    assert live.get("policy_overrides") == {"OUT_OF_MEMORY": {"max_attempts": 1}}
    assert not live.apply("policy_overrides", "[1, 2]")  # a list is not the dict the default is


def test_a_setting_without_default_keeps_plain_text():
    live = LiveConfig("tenancy", {}, {"signing_key": "/run/keys/signing-key.pem"})
    assert live.get("signing_key") == "/run/keys/signing-key.pem"


def test_a_value_a_subscriber_refuses_is_refused_and_the_last_good_value_stays():
    # e.g. detector's confidence_threshold: valid JSON of the right type, out of range.
    from services.common.errors import InvalidArgument

    def threshold(key, value):
        if key == "threshold" and not 0.0 <= value <= 1.0:
            raise InvalidArgument("confidence_threshold", f"must be in [0, 1], got {value}")

    heard = []
    live = LiveConfig("detector", {"threshold": 0.6, "other": 1})
    live.subscribe(threshold)
    live.subscribe(lambda key, value: heard.append((key, value)))
    assert live.apply("threshold", "0.7")
    assert not live.apply("threshold", "5")  # must not raise out of the etcd watch loop
    assert live.get("threshold") == 0.7
    assert live.apply("other", "2")  # later keys still apply
    assert live.get("other") == 2
    assert ("threshold", 5.0) not in heard
