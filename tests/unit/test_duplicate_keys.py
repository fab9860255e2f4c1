"""Match keys of likely duplicates (deployments/customer/duplicates/keys.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from deployments.customer.duplicates import keys


def test_names_fold_case_accents_and_legal_forms() -> None:
    same = [
        ("ACME Inc.", "Acme"),
        ("Acme Co., Ltd.", "acme"),
        ("Công ty TNHH MTV ABC", "ABC"),
        ("Công ty Cổ phần Sữa Việt Nam", "sua viet nam"),
        ("Nguyễn Văn Đức", "nguyen van duc"),
        ("Ørsted A/S", "orsted"),
        ("Müller GmbH", "MULLER"),
        ("Banco S.A.", "banco"),
        ("株式会社トヨタ", "トヨタ"),
        ("삼성전자 주식회사", "삼성전자"),
    ]
    for a, b in same:
        assert keys.name_key(a) == keys.name_key(b), (a, b)
    assert keys.name_key("Acme") != keys.name_key("Acme Labs")
    # A name that is only a legal form keeps its words.
    assert keys.name_key("Limited") == "name:limited"
    assert keys.name_key("  ") is None and keys.name_key(None) is None


def test_addresses_and_numbers() -> None:
    assert (
        keys.email_key(" Ann@Acme.COM ") == keys.email_key("ann@acme.com") == "email:ann@acme.com"
    )
    assert keys.email_key("not an address") is None
    assert keys.phone_key("+84 912 345 678") == keys.phone_key("0912-345-678") == "phone:912345678"
    assert keys.phone_key("12 34") is None


def test_a_contacts_name_is_its_customers() -> None:
    ann = {"first_name": "Ann", "last_name": "Lê", "customer_id": 7}
    assert keys.of_contact(ann) == ["name:7:ann le"]
    assert keys.of_contact({**ann, "customer_id": 8}) != keys.of_contact(ann)
    both = keys.of_customer({"name": "Acme", "email": "a@acme.com", "phone": "0912345678"})
    assert [keys.kind_of(k) for k in both] == ["email", "phone", "name"]
    other = keys.of_customer({"name": "ACME Ltd", "email": "b@acme.com", "phone": "912345678"})
    assert keys.matched_on(both, other) == ["phone", "name"]


@given(st.text(max_size=300))
def test_any_name_gives_a_bounded_key_or_none(name: str) -> None:
    key = keys.name_key(name)
    assert key is None or (key.startswith("name:") and len(key) <= keys.KEY_MAX)
    assert key == keys.name_key(name.upper().lower()) or name.upper().lower() != name.lower()
