from foxreviews_pipeline.lib.directory.checks import audit_entreprises, share


def test_audit_finds_invalid_identifiers_and_masked_values(pg_conn):
    pg_conn.execute(
        """
        INSERT INTO enterprise_entreprise (siret, siren, nom, code_commune) VALUES
          ('73282932000074', '732829320', 'VALIDE', '75056'),
          ('73282932000075', '732829320', 'CLE FAUSSE', '75056'),
          ('35600000012345', '356000000', 'LA POSTE', '75056'),
          ('55203253400646', '552032534', 'MASQUE', '[ND]')
        """
    )
    audit = audit_entreprises(pg_conn, ["73282932000074", "73282932000075", "35600000012345", "55203253400646", "99999999999999"])
    assert audit.rows == 4
    # La Poste's establishments follow their own rule (digit sum a multiple of 5): 3+5+6+1+2+3+4+5 = 29.
    assert sorted(audit.invalid_identifiers) == ["35600000012345", "73282932000075"]
    assert audit.nd_rows == 1
    assert audit.duplicate_sirets == 0


def test_share_of_nothing_is_complete():
    assert share(0, 0) == 1.0
    assert share(19, 20) == 0.95



def test_audit_lists_masked_rows_in_order_and_keys_from_one_string(pg_conn):
    # The table's constraints keep malformed SIRETs out; the keys are what the audit checks.
    pg_conn.execute(
        """
        INSERT INTO enterprise_entreprise (siret, siren, nom, code_postal, code_commune) VALUES
          ('44306184100047', '443061841', 'COMMUNE MASQUEE', NULL, '[ND]'),
          ('30613890001294', '306138900', 'AUSSI MASQUEE', NULL, '[ND]'),
          ('30613890003091', '306138900', 'CLE FAUSSE', NULL, '69123'),
          ('30613890003092', '306138900', 'VALIDE', NULL, '69123')
        """
    )
    audit = audit_entreprises(pg_conn, [
        "44306184100047", "30613890001294", "30613890003091", "30613890003092",
        "30613890003092", "00000000000000",
    ])
    assert audit.rows == 4 and audit.duplicate_sirets == 0
    assert audit.invalid_identifiers == ["30613890003091"]
    assert (audit.nd_rows, audit.nd_sample) == (2, ["30613890001294", "44306184100047"])
    empty = audit_entreprises(pg_conn, [])
    assert (empty.rows, empty.invalid_identifiers, empty.nd_sample) == (0, [], [])


def test_audit_still_finds_malformed_identifiers_if_the_constraints_were_gone(pg_conn):
    pg_conn.execute("ALTER TABLE enterprise_entreprise DROP CONSTRAINT enterprise_entreprise_siret_check")
    pg_conn.execute("ALTER TABLE enterprise_entreprise DROP CONSTRAINT enterprise_entreprise_check")
    malformed = ["7328293200007A", "73282932000é4", "7328293200007", "73282932000074"]
    pg_conn.execute(
        """
        INSERT INTO enterprise_entreprise (siret, siren, nom, code_commune) VALUES
          ('7328293200007A', '732829320', 'LETTRE', '75056'),
          ('73282932000é4', '732829320', 'ACCENT', '75056'),
          ('7328293200007', '732829320', 'COURT', '75056'),
          ('73282932000074', '732829321', 'SIREN FAUX', '75056'),
          ('30613890003092', '306138900', 'VALIDE', '69123')
        """
    )
    audit = audit_entreprises(pg_conn, [*malformed, "30613890003092"])
    assert audit.rows == 5 and audit.duplicate_sirets == 0
    assert sorted(audit.invalid_identifiers) == sorted(malformed)


def test_keys_of_the_usual_lengths_are_checked_at_once_with_the_same_answer():
    from foxreviews_pipeline.lib.directory.checks import _check_keys

    rows = [
        ("30613890003092", "306138900"),  # valid
        ("30613890003091", "306138900"),  # wrong key
        ("73282932000074", "732829321"),  # SIREN not the SIRET's head
        ("35600000012345", "356000000"),  # La Poste, digit sum not a multiple of 5
        ("44306184100047", "443061841"),  # valid
        ("4430618410004A", "443061841"),  # not all digits
        ("30613890003092", "306138900"),  # a repeat
    ]
    packed = "".join(siret + siren for siret, siren in rows)
    wrong = ["30613890003091", "73282932000074", "35600000012345", "4430618410004A"]
    at_once = _check_keys(packed, [], [])
    assert at_once == (1, wrong)
    # A key of another length sends every key through the one-by-one path: the same answer,
    # plus it; so does a character beyond ASCII.
    repeats, invalid = _check_keys(packed, ["7328293200007"], ["732829320"])
    assert (repeats, sorted(invalid)) == (1, sorted([*wrong, "7328293200007"]))
    accented = packed + "73282932000é4" + "7" + "732829320"
    repeats, invalid = _check_keys(accented, [], [])
    assert (repeats, sorted(invalid)) == (1, sorted([*wrong, "73282932000é47"]))
    assert _check_keys("", [], []) == (0, [])


def test_audit_lists_what_the_establishments_that_may_not_be_published_show(pg_conn):
    from foxreviews_pipeline_tests.directory.test_write_path import seed_reference

    seed_reference(pg_conn)
    pg_conn.execute(
        """
        INSERT INTO enterprise_entreprise (siret, siren, nom, statut_diffusion, code_commune) VALUES
          ('73282932000074', '732829320', 'JEAN DUPONT', 'N', '69123'),  -- a name in clear
          ('55203253400646', '552032534', NULL, 'N', '69123'),  -- nothing shown, but a page
          ('44306184100047', '443061841', 'BOULANGERIE', 'O', '69123'),  -- published, a page
          ('30613890003092', '306138900', NULL, 'P', '69123');  -- hidden, shows nothing
        INSERT INTO enterprise_prolocalisation (entreprise_id, sous_categorie_id, ville_id)
        SELECT id, 10, 100 FROM enterprise_entreprise WHERE siret IN ('55203253400646', '44306184100047');
        """
    )
    audit = audit_entreprises(pg_conn, ["73282932000074", "55203253400646", "44306184100047", "30613890003092"])
    assert audit.rows == 4
    assert audit.diffusion_violations == [
        {"siret": "55203253400646", "statut_diffusion": "N", "personal_fields": False, "active_prolocalisations": 1},
        {"siret": "73282932000074", "statut_diffusion": "N", "personal_fields": True, "active_prolocalisations": 0},
    ]
