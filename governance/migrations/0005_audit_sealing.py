"""Audit events are appended unsealed and sealed afterwards (issue 15: no per-tenant lock).

``sequence`` is NULL and ``prev_hash``/``hash`` empty until ``governance.audit.seal_chain``
chains the event. The append-only trigger now allows exactly that one change: an unsealed
row gets its sequence and hashes, every recorded field unchanged. A sealed row still can
be neither updated nor deleted, by any role; the app role's UPDATE privilege is limited
to the three sealing columns (``governance.roles.provision``).
"""

from django.db import migrations, models

_REFUSE = """
    RAISE EXCEPTION 'permission denied: audit events are append-only (% on %)', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
"""
_HEAD = """
CREATE OR REPLACE FUNCTION governance_audit_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' AND current_setting('is_superuser') = 'on' THEN
        RETURN NULL;
    END IF;
"""
_SEALING = """
    IF TG_OP = 'UPDATE' AND OLD.sequence IS NULL AND OLD.hash = ''
       AND NEW.sequence IS NOT NULL AND NEW.hash <> ''
       AND (NEW.id, NEW.tenant_id, NEW.occurred_at, NEW.actor_type, NEW.actor_id, NEW.action,
            NEW.target_type, NEW.target_id, NEW.changes, NEW.correlation_id)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.tenant_id, OLD.occurred_at, OLD.actor_type, OLD.actor_id, OLD.action,
            OLD.target_type, OLD.target_id, OLD.changes, OLD.correlation_id) THEN
        RETURN NEW;
    END IF;
"""
FORWARD = _HEAD + _SEALING + _REFUSE
BACKWARD = _HEAD + _REFUSE


class Migration(migrations.Migration):
    dependencies = [("governance", "0004_invitations")]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="sequence",
            field=models.PositiveBigIntegerField(blank=True, null=True),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="hash",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddIndex(
            model_name="auditevent",
            index=models.Index(
                condition=models.Q(("sequence__isnull", True)),
                fields=["tenant", "id"],
                name="audit_unsealed",
            ),
        ),
        migrations.RunSQL(FORWARD, BACKWARD),
    ]
