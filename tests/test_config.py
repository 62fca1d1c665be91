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


def test_production_requires_strong_secret_and_issuer():
    with pytest.raises(ConfigurationError, match="SECRET_KEY"):
        Settings.from_env({"PORTAL_ENV": "production"}).check()
    with pytest.raises(ConfigurationError, match="OIDC_ISSUER"):
        Settings.from_env({"PORTAL_ENV": "production", "SECRET_KEY": "k" * 64}).check()
    Settings.from_env(
        {"PORTAL_ENV": "production", "SECRET_KEY": "k" * 64, "OIDC_ISSUER": "https://idp"}
    ).check()


def test_viewer_native_limit_default_and_override():
    assert Settings.from_env({}).viewer_native_max_bytes == 512 * 1024**2
    settings = Settings.from_env({"VIEWER_NATIVE_MAX_BYTES": "1000"})
    assert settings.viewer_native_max_bytes == 1000
    with pytest.raises(ConfigurationError, match="VIEWER_NATIVE_MAX_BYTES"):
        Settings.from_env({"VIEWER_NATIVE_MAX_BYTES": "-1"}).check()
    with pytest.raises(ConfigurationError, match="VIEWER_NATIVE_MAX_BYTES"):
        Settings.from_env({"VIEWER_NATIVE_MAX_BYTES": "big"})
