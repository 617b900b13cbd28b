"""The audit table is append-only in PostgreSQL, whatever the client.

A trigger refuses UPDATE and DELETE of audit rows for every role, superusers included
(they alone can switch it off, with ``session_replication_role = replica`` or
``ALTER TABLE ... DISABLE TRIGGER`` as the table's owner: that is what an attacker with
full database access does, and what the external checkpoints catch). TRUNCATE is refused
too, except for superusers: they can bypass the trigger anyway, and the test harness
empties tables with TRUNCATE between tests. Where the application connects as a role of
its own (not the tables' owner), ``manage.py audit restrict-role ROLE`` also revokes the
privileges themselves (see docs/operations.md).
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION governance_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('is_superuser') = 'on' THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION 'permission denied: audit events are append-only (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER governance_auditevent_append_only
    BEFORE UPDATE OR DELETE ON governance_auditevent
    FOR EACH ROW EXECUTE FUNCTION governance_audit_append_only();
CREATE TRIGGER governance_auditevent_no_truncate
    BEFORE TRUNCATE ON governance_auditevent
    FOR EACH STATEMENT EXECUTE FUNCTION governance_audit_append_only();
REVOKE UPDATE, DELETE, TRUNCATE ON governance_auditevent FROM PUBLIC;
"""

BACKWARD = """
DROP TRIGGER IF EXISTS governance_auditevent_no_truncate ON governance_auditevent;
DROP TRIGGER IF EXISTS governance_auditevent_append_only ON governance_auditevent;
DROP FUNCTION IF EXISTS governance_audit_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("governance", "0002_governance_models")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
