import pytest

from portal.config import ConfigurationError, Settings


def test_defaults_match_documented_values():
    settings = Settings.from_env({})
    assert settings.dicom_target_hw == (512, 512)
    assert settings.dicom_target_slices == 64
    assert settings.dicom_window_center == 40.0
    assert settings.dicom_window_width == 400.0
    assert settings.inference_api_timeout_s == 300.0
    assert settings.max_upload_bytes == 2 * 1024**3
    assert settings.presigned_url_ttl_s == 300
    assert settings.database_url.startswith("sqlite:///")


@pytest.mark.parametrize("raw", ["(256, 320)", "256,320", "256 320", "[256, 320]"])
def test_target_hw_accepts_common_spellings(raw):
    assert Settings.from_env({"DICOM_TARGET_HW": raw}).dicom_target_hw == (256, 320)


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("DICOM_TARGET_HW", "512", "two integers"),
        ("DICOM_TARGET_SLICES", "many", "not an integer"),
        ("ENABLE_SEAT_LIMIT_CHECK", "maybe", "not a boolean"),
        ("PRESIGNED_URL_TTL", "3600", "between 1 and 300"),
        ("INFERENCE_API_TIMEOUT", "soon", "not a number"),
    ],
)
def test_invalid_values_name_the_setting(name, value, fragment):
    with pytest.raises(ConfigurationError, match=fragment) as raised:
        Settings.from_env({name: value})
    assert name in str(raised.value)


def test_cognito_issuer_from_region_and_pool():
    settings = Settings.from_env(
        {"COGNITO_REGION": "sa-east-1", "COGNITO_USER_POOL_ID": "sa-east-1_AbCdEf"}
    )
    assert settings.issuer == "https://cognito-idp.sa-east-1.amazonaws.com/sa-east-1_AbCdEf"


def test_oidc_issuer_overrides_cognito():
    settings = Settings.from_env(
        {
            "COGNITO_REGION": "sa-east-1",
            "COGNITO_USER_POOL_ID": "x",
            "OIDC_ISSUER": "http://127.0.0.1:9010/",
        }
    )
    assert settings.issuer == "http://127.0.0.1:9010"


def test_session_and_token_settings_are_read():
    settings = Settings.from_env(
        {
            "SESSION_IDLE_TIMEOUT": "600",
            "SESSION_MAX_LIFETIME": "7200",
            "TOKEN_LEEWAY": "10",
            "COGNITO_CLIENT_ID": "web-client",
            "API_TOKEN_CLIENT_IDS": "ris-client, pacs-client",
            "RATE_LIMIT_API": "5 per second",
        }
    )
    assert settings.session_idle_timeout_s == 600
    assert settings.session_max_lifetime_s == 7200
    assert settings.token_leeway_s == 10
    assert settings.accepted_client_ids == ("ris-client", "pacs-client")
    assert settings.rate_limit_api == "5 per second"
    assert Settings.from_env({"COGNITO_CLIENT_ID": "web"}).accepted_client_ids == ("web",)


@pytest.mark.parametrize(
    ("environ", "fragment"),
    [
        ({"RATE_LIMIT_API": "lots"}, "not a rate limit"),
        ({"SESSION_IDLE_TIMEOUT": "5"}, "at least 60"),
        ({"SESSION_IDLE_TIMEOUT": "3600", "SESSION_MAX_LIFETIME": "600"}, "SESSION_MAX_LIFETIME"),
        ({"TOKEN_LEEWAY": "3600"}, "TOKEN_LEEWAY"),
    ],
)
def test_invalid_session_and_limit_settings_rejected(environ, fragment):
    with pytest.raises(ConfigurationError, match=fragment):
        Settings.from_env(environ).check()


def test_session_cookie_flags():
    local = Settings.from_env({}).flask_config()
    assert local["SESSION_COOKIE_HTTPONLY"] is True
    assert local["SESSION_COOKIE_SAMESITE"] == "Lax"
    assert local["SESSION_COOKIE_SECURE"] is False
    hosted = Settings.from_env({"PORTAL_BASE_URL": "https://portal.example.com.br"})
    assert hosted.flask_config()["SESSION_COOKIE_SECURE"] is True
    assert hosted.flask_config()["SESSION_COOKIE_NAME"] == "__Host-session"


def test_viewer_native_limit_default_and_override():
    assert Settings.from_env({}).viewer_native_max_bytes == 512 * 1024**2
    settings = Settings.from_env({"VIEWER_NATIVE_MAX_BYTES": "1000"})
    assert settings.viewer_native_max_bytes == 1000
    with pytest.raises(ConfigurationError, match="VIEWER_NATIVE_MAX_BYTES"):
        Settings.from_env({"VIEWER_NATIVE_MAX_BYTES": "-1"}).check()
    with pytest.raises(ConfigurationError, match="VIEWER_NATIVE_MAX_BYTES"):
        Settings.from_env({"VIEWER_NATIVE_MAX_BYTES": "big"})
