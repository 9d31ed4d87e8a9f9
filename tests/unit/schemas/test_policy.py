"""Policy as data: the register loads, fails fast with the file and field, hashes canonically."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from schemas.errors import ConfigurationError
from schemas.policy import load_policy

POLICY_DIR = Path(__file__).resolve().parents[3] / "policy"


@pytest.fixture
def policy_copy(tmp_path: Path) -> Path:
    target = tmp_path / "policy"
    shutil.copytree(POLICY_DIR, target)
    return target


def test_the_trust_policy_loads() -> None:
    policy = load_policy(POLICY_DIR)
    assert policy.trust.notice_version == "1.0"
    assert {s.key for s in policy.trust.schools} >= {"hawthorn-primary", "rose-valley"}
    assert policy.digest.startswith("sha256:")


def test_digest_is_canonical_and_changes_with_content(policy_copy: Path) -> None:
    original = load_policy(POLICY_DIR).digest
    text = (policy_copy / "rules.yaml").read_text()
    (policy_copy / "rules.yaml").write_text("# a comment changes nothing\n" + text)
    assert load_policy(policy_copy).digest == original
    (policy_copy / "rules.yaml").write_text(text.replace("cctv_days: 31", "cctv_days: 30"))
    assert load_policy(policy_copy).digest != original


def test_unknown_field_names_file_and_path(policy_copy: Path) -> None:
    path = policy_copy / "trust.yaml"
    path.write_text(path.read_text().replace("  notice_version:", "  colour: red\n  notice_version:"))
    with pytest.raises(ConfigurationError) as info:
        load_policy(policy_copy)
    assert "trust.yaml" in str(info.value)
    assert "trust.colour" in str(info.value)


def test_bad_cross_reference_names_file_and_path(policy_copy: Path) -> None:
    path = policy_copy / "recipients.yaml"
    path.write_text(path.read_text().replace("purpose: census_return", "purpose: census_retrun", 1))
    with pytest.raises(ConfigurationError) as info:
        load_policy(policy_copy)
    message = str(info.value)
    assert "recipients.yaml" in message
    assert "recipients.0.grants.0.purpose" in message
    assert "census_retrun" in message


def test_missing_file_is_named(policy_copy: Path) -> None:
    (policy_copy / "categories.yaml").unlink()
    with pytest.raises(ConfigurationError, match=r"categories\.yaml: policy file missing"):
        load_policy(policy_copy)


def test_category_classes_inherit_from_ancestors() -> None:
    index = load_policy(POLICY_DIR).index
    assert index.category_class("health.allergy") == "art9"
    assert index.category_class("health.allergy.nuts") == "art9"
    assert index.category_class("trip") == "ordinary"
    assert index.category_class("trip.medical") == "art9"
    assert index.category_class("criminal.caution") == "art10"
    assert index.category_class("fsm_eligibility") == "sensitive"
    assert index.category_class("horoscope") is None


def test_recipients_match_exactly_or_by_prefix() -> None:
    index = load_policy(POLICY_DIR).index
    assert index.recipient("sims") is not None
    police = index.recipient("police:west-yorkshire")
    assert police is not None
    assert police.key == "police"
    assert index.recipient("police:") is None
    assert index.recipient("acme-data-broker") is None


def test_usa_is_not_adequate_but_the_eea_is() -> None:
    index = load_policy(POLICY_DIR).index
    assert "US" not in index.adequate
    assert {"IE", "FR", "DE", "NO", "IS", "LI"} <= index.adequate
    assert "US" in index.dpf_countries


def test_unknown_cp_file_purpose_names_the_rules_file(policy_copy: Path) -> None:
    path = policy_copy / "rules.yaml"
    path.write_text(path.read_text().replace("cp_file_purposes: [cp_file_transfer]", "cp_file_purposes: [cp_flie]"))
    with pytest.raises(ConfigurationError) as info:
        load_policy(policy_copy)
    assert "rules.yaml: channels.cp_file_purposes: unknown purpose 'cp_flie'" in str(info.value)


def test_age_limit_on_a_category_the_grant_does_not_permit_is_refused(policy_copy: Path) -> None:
    path = policy_copy / "recipients.yaml"
    path.write_text(path.read_text().replace("category_min_age: {fsm_eligibility: 5}", "category_min_age: {health: 5}"))
    with pytest.raises(ConfigurationError) as info:
        load_policy(policy_copy)
    assert "category_min_age: 'health' is not a permitted category" in str(info.value)
    path.write_text(path.read_text().replace("category_min_age: {health: 5}", "category_min_age: {fsm_eligibility: 0}"))
    with pytest.raises(ConfigurationError, match=r"category_min_age\.fsm_eligibility"):
        load_policy(policy_copy)
