import pytest

from portal.auth.safe_redirect import safe_next_path


@pytest.mark.parametrize("target", ["/studies/", "/studies/abc?x=1", "/"])
def test_relative_paths_are_kept(target):
    assert safe_next_path(target) == target


@pytest.mark.parametrize(
    "target",
    [
        "//evil.example/",
        "https://evil.example/",
        "http:evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "%2F%2Fevil.example",
        "/%2F/evil.example",
        "/%5Cevil.example",
        "/%252F%252Fevil.example",
        "javascript:alert(1)",
        "studies/",
        "/studies\n/x",
        "",
        None,
    ],
)
def test_external_or_ambiguous_targets_are_rejected(target):
    assert safe_next_path(target) is None
