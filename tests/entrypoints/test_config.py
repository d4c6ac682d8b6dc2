import pytest
from pydantic import SecretStr, ValidationError

from config import ConfigurationError, PluralEnv, Settings, load_settings


def test_sandbox_defaults_point_at_the_local_sandbox():
    s = Settings()
    assert s.plural_env is PluralEnv.sandbox
    assert s.api_base == "http://127.0.0.1:8700"
    assert s.token_url == "http://127.0.0.1:8700/api/auth/v1/token"


def test_token_url_is_a_separate_setting_from_the_base():
    s = Settings(plural_api_base="https://api.example/", plural_token_url="https://auth.example/token")
    assert s.api_base == "https://api.example"
    assert s.token_url == "https://auth.example/token"


def test_uat_defaults_to_plural_uat_host_when_secrets_are_real():
    s = Settings(plural_env="uat", plural_client_id="cid", plural_client_secret=SecretStr("x" * 20),
                 plural_webhook_secret=SecretStr("w" * 20), plural_callback_secret=SecretStr("ab12"),
                 orchestrator_api_key=SecretStr("k" * 20),
                 card_encryption_key=SecretStr("MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="))
    assert s.api_base == "https://pluraluat.v2.pinepg.in"


def test_placeholder_secrets_are_refused_outside_sandbox_naming_the_variables():
    with pytest.raises(ConfigurationError) as err:
        load_settings(plural_env="production")
    text = str(err.value)
    assert "PLURAL_CLIENT_SECRET" in text and "PLURAL_WEBHOOK_SECRET" in text and "PLURAL_CLIENT_ID" in text


def test_callback_secret_must_be_hex():
    with pytest.raises(ValidationError):
        Settings(plural_callback_secret=SecretStr("not-hex"))


def test_a_claim_lease_under_a_second_is_refused_by_name():
    with pytest.raises(ConfigurationError) as err:  # renewing every third of it would flood the database
        load_settings(claim_lease_seconds=0.5)
    assert "CLAIM_LEASE_SECONDS" in str(err.value)


def test_secrets_do_not_print():
    s = Settings()
    assert "sandbox-client-secret" not in repr(s)
    assert "sandbox-client-secret" not in str(s.model_dump())


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("HTTP_READ_TIMEOUT", "7.5")
    monkeypatch.setenv("CUSTOMER_ACTION_TIMEOUT", "42")
    s = Settings()
    assert s.http_read_timeout == 7.5 and s.customer_action_timeout == 42


REAL = dict(plural_client_id="cid", plural_client_secret=SecretStr("x" * 20), plural_webhook_secret=SecretStr("w" * 20),
            plural_callback_secret=SecretStr("ab12"), orchestrator_api_key=SecretStr("k" * 20),
            card_encryption_key=SecretStr("MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="))


@pytest.mark.parametrize("base", ["http://sandbox:8700", "http://127.0.0.1:8700", "https://evil.example",
                                  "http://api.pluralpay.in"])
def test_production_refuses_an_api_base_that_is_not_plurals(base):
    with pytest.raises(ConfigurationError) as err:
        load_settings(plural_env="production", plural_api_base=base, **REAL)
    assert "PLURAL_API_BASE" in str(err.value)


def test_production_refuses_a_token_url_that_is_not_plurals():
    with pytest.raises(ConfigurationError) as err:
        load_settings(plural_env="production", plural_token_url="http://sandbox:8700/api/auth/v1/token", **REAL)
    assert "PLURAL_TOKEN_URL" in str(err.value)


def test_an_explicitly_allowed_https_base_is_accepted():
    s = load_settings(plural_env="production", plural_api_base="https://plural-proxy.shop.example",
                      plural_allowed_api_bases="https://plural-proxy.shop.example", **REAL)
    assert s.api_base == "https://plural-proxy.shop.example"


def test_production_defaults_to_plurals_own_host():
    assert load_settings(plural_env="production", **REAL).api_base == "https://api.pluralpay.in"


def test_events_pushed_outside_sandbox_need_a_real_signing_secret():
    with pytest.raises(ConfigurationError) as err:
        load_settings(plural_env="production", merchant_webhook_url="https://shop.example/events", **REAL)
    assert "MERCHANT_WEBHOOK_SECRET" in str(err.value)
    load_settings(plural_env="production", merchant_webhook_url="https://shop.example/events",
                  merchant_webhook_secret=SecretStr("whsec_" + "cmVhbC1zaG9wLXNlY3JldC0xMjM0NQ=="), **REAL)


def test_the_merchant_webhook_secret_must_be_a_standard_webhooks_secret():
    with pytest.raises(ConfigurationError) as err:
        load_settings(merchant_webhook_secret="not base64 !")
    assert "MERCHANT_WEBHOOK_SECRET" in str(err.value) or "merchant_webhook_secret" in str(err.value)


def test_heroku_style_postgres_urls_are_understood():
    s = Settings(database_url="postgres://u:p@db.example:5432/shop")
    assert s.sqlalchemy_url == "postgresql+psycopg://u:p@db.example:5432/shop"
    from orchestrator.store.database import make_engine

    assert make_engine("postgres://u:p@db.example:5432/shop").dialect.name == "postgresql"


def test_a_worker_on_its_own_finds_the_embedded_redis_of_up():
    from config.settings import EMBEDDED_REDIS_PORT

    assert Settings(redis_url=None).broker_url == f"redis://127.0.0.1:{EMBEDDED_REDIS_PORT}/0"
    assert Settings(redis_url="redis://cache:6379/2").broker_url == "redis://cache:6379/2"


def test_the_command_has_a_version_and_shows_its_defaults(capsys):
    from orchestrator.entrypoints.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["--version"])
    assert capsys.readouterr().out.startswith("orchestrator ")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["checkout", "--help"])
    out = capsys.readouterr().out
    assert ":param" not in out and "``" not in out


def _production(**overrides):
    return Settings(plural_env="production", plural_client_id="cid", plural_client_secret=SecretStr("x" * 20),
                    plural_webhook_secret=SecretStr("w" * 20), plural_callback_secret=SecretStr("ab12"),
                    orchestrator_api_key=SecretStr("k" * 20),
                    card_encryption_key=SecretStr("MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="), **overrides)


def test_outside_the_sandbox_metrics_and_docs_are_closed_unless_asked_for():
    s = _production()
    assert (s.ops_public, s.docs_enabled, s.metrics_token) == (False, False, None)
    opened = _production(metrics_public=True, api_docs=True)
    assert (opened.ops_public, opened.docs_enabled) == (True, True)
    assert (Settings().ops_public, Settings().docs_enabled) == (True, True)  # the sandbox stays convenient
    assert _production().api_max_body_bytes == 64 * 1024 and _production().webhook_max_body_bytes == 256 * 1024


def test_an_unpadded_merchant_webhook_secret_is_accepted_and_decoded_as_standardwebhooks_does():
    from standardwebhooks import Webhook

    from config.settings import merchant_webhook_key

    for secret in ("whsec_cmVhbC1zaG9wLXNlY3JldC0xMjM0NQ", "whsec_cmVhbC1zaG9wLXNlY3JldC0xMjM0NQ=="):
        s = load_settings(merchant_webhook_secret=secret)
        assert s.merchant_webhook_key() == merchant_webhook_key(secret) == Webhook(secret)._whsecret


def test_an_empty_merchant_webhook_secret_is_refused():
    with pytest.raises(ConfigurationError) as err:
        load_settings(merchant_webhook_secret="whsec_")
    assert "MERCHANT_WEBHOOK_SECRET" in str(err.value)


EVENTS_SECRET = SecretStr("whsec_" + "cmVhbC1zaG9wLXNlY3JldC0xMjM0NQ==")


@pytest.mark.parametrize("url", ["http://shop.example/events", "https://127.0.0.1/events",
                                 "https://169.254.169.254/latest", "https://10.0.0.5/events",
                                 "https://192.168.1.20/events", "https://[::1]/events",
                                 "https://[::ffff:127.0.0.1]/events", "https://localhost/events"])
def test_outside_the_sandbox_the_merchant_webhook_url_must_be_https_and_public(url):
    with pytest.raises(ConfigurationError) as err:
        load_settings(plural_env="production", merchant_webhook_url=url, merchant_webhook_secret=EVENTS_SECRET,
                      **REAL)
    assert "MERCHANT_WEBHOOK_URL" in str(err.value)


def test_a_merchant_host_that_resolves_to_a_private_address_is_refused(monkeypatch):
    import config.settings as cfg

    monkeypatch.setattr(cfg, "resolve_host", lambda host, port: {"93.184.216.34", "172.16.4.2"})
    with pytest.raises(ConfigurationError) as err:
        load_settings(plural_env="uat", merchant_webhook_url="https://shop.example/events",
                      merchant_webhook_secret=EVENTS_SECRET, **REAL)
    assert "MERCHANT_WEBHOOK_URL" in str(err.value) and "172.16.4.2" in str(err.value)
    monkeypatch.setattr(cfg, "resolve_host", lambda host, port: {"93.184.216.34"})
    load_settings(plural_env="uat", merchant_webhook_url="https://shop.example/events",
                  merchant_webhook_secret=EVENTS_SECRET, **REAL)


@pytest.mark.parametrize("address", ["64:ff9b::a00:1", "::127.0.0.1", "2002:7f00:1::", "::ffff:169.254.169.254"])
def test_an_ipv6_address_wrapping_a_private_ipv4_one_is_refused(monkeypatch, address):
    import config.settings as cfg

    monkeypatch.setattr(cfg, "resolve_host", lambda host, port: {address})
    with pytest.raises(ConfigurationError) as err:
        load_settings(plural_env="uat", merchant_webhook_url="https://shop.example/events",
                      merchant_webhook_secret=EVENTS_SECRET, **REAL)
    assert address in str(err.value)


def test_an_ipv6_address_wrapping_a_public_ipv4_one_is_accepted(monkeypatch):
    import config.settings as cfg

    monkeypatch.setattr(cfg, "resolve_host", lambda host, port: {"64:ff9b::808:808"})
    load_settings(plural_env="uat", merchant_webhook_url="https://shop.example/events",
                  merchant_webhook_secret=EVENTS_SECRET, **REAL)


def test_a_private_merchant_url_is_accepted_when_allowed_but_still_only_over_https():
    s = load_settings(plural_env="production", merchant_webhook_url="https://10.0.0.5/events",
                      merchant_webhook_allow_private=True, merchant_webhook_secret=EVENTS_SECRET, **REAL)
    assert s.merchant_url_problem() is None
    with pytest.raises(ConfigurationError):
        load_settings(plural_env="production", merchant_webhook_url="http://10.0.0.5/events",
                      merchant_webhook_allow_private=True, merchant_webhook_secret=EVENTS_SECRET, **REAL)


def test_the_sandbox_pushes_events_to_a_local_http_receiver():
    s = load_settings(merchant_webhook_url="http://127.0.0.1:9000/events")
    assert s.merchant_url_problem() is None
