def test_identity_links_by_issuer_and_subject(app):
    from portal.auth.services import user_from_claims
    from portal.extensions import db

    with app.app_context():
        first = user_from_claims("http://idp-a", {"sub": "s1", "email": "x@example.com"})
        db.session.commit()
        renamed = user_from_claims(
            "http://idp-a", {"sub": "s1", "email": "new@example.com", "name": "Dra. X"}
        )
        db.session.commit()
        same_email_other_sub = user_from_claims(
            "http://idp-a", {"sub": "s2", "email": "new@example.com"}
        )
        other_issuer = user_from_claims("http://idp-b", {"sub": "s1", "email": "x@example.com"})
        db.session.commit()
        assert renamed.id == first.id
        assert renamed.email == "new@example.com"
        assert renamed.display_name == "Dra. X"
        assert same_email_other_sub.id != first.id
        assert other_issuer.id != first.id
        assert renamed.last_login_at is not None


def test_demo_seed_is_idempotent(app):
    from sqlalchemy import func, select

    from portal.clinics.models import Clinic, Identity, Membership
    from portal.clinics.services import ensure_demo_data
    from portal.extensions import db

    with app.app_context():
        first = ensure_demo_data("http://127.0.0.1:9010")
        db.session.commit()
        second = ensure_demo_data("http://127.0.0.1:9010")
        db.session.commit()
        assert first.id == second.id
        assert db.session.scalar(select(func.count()).select_from(Clinic)) == 1
        assert db.session.scalar(select(func.count()).select_from(Identity)) == 2
        roles = sorted(m.role.value for m in db.session.scalars(select(Membership)))
        assert roles == ["admin", "doctor"]
