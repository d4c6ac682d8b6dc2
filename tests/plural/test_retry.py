from orchestrator.plural.retry import backoff_delay, parse_retry_after, should_retry


def test_connection_failure_before_sending_is_retried_even_for_unsafe_calls():
    assert should_retry(attempt=1, max_attempts=3, replay_safe=False, status=None, sent=False)


def test_timeout_after_sending_is_retried_only_when_replay_safe():
    assert should_retry(attempt=1, max_attempts=3, replay_safe=True, status=None, sent=True)
    assert not should_retry(attempt=1, max_attempts=3, replay_safe=False, status=None, sent=True)


def test_server_errors_are_retried_only_when_replay_safe():
    assert should_retry(attempt=1, max_attempts=3, replay_safe=True, status=503)
    assert not should_retry(attempt=1, max_attempts=3, replay_safe=False, status=500)


def test_rate_limit_is_retried_even_for_unsafe_calls():
    assert should_retry(attempt=1, max_attempts=3, replay_safe=False, status=429)


def test_business_errors_are_never_retried():
    for status in (400, 401, 404, 409, 422):
        assert not should_retry(attempt=1, max_attempts=5, replay_safe=True, status=status)


def test_no_retry_once_attempts_are_used_up():
    assert not should_retry(attempt=3, max_attempts=3, replay_safe=True, status=503)


def test_backoff_grows_exponentially_and_is_capped():
    top = lambda: 1.0  # noqa: E731
    assert backoff_delay(1, base=0.5, cap=10, rand=top) == 0.5
    assert backoff_delay(3, base=0.5, cap=10, rand=top) == 2.0
    assert backoff_delay(10, base=0.5, cap=10, rand=top) == 10


def test_backoff_is_jittered_below_the_ceiling():
    assert backoff_delay(3, base=0.5, cap=10, rand=lambda: 0.25) == 0.5


def test_retry_after_wins_when_longer():
    assert backoff_delay(1, base=0.1, cap=5, retry_after=3, rand=lambda: 0.5) == 3


def test_retry_after_parses_seconds_and_http_dates():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
