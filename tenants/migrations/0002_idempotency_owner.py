"""Idempotency records get an owner namespace so platform-admin POSTs can use them too."""

from django.db import migrations, models


def forget_records(apps, schema_editor):  # type: ignore[no-untyped-def]
    # Records live 24 h and only deduplicate retries: dropping them is safe.
    apps.get_model("tenants", "IdempotencyRecord").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("tenants", "0001_initial")]

    operations = [
        migrations.RunPython(forget_records, migrations.RunPython.noop),
        migrations.RemoveConstraint(
            model_name="idempotencyrecord", name="idempotency_unique_request"
        ),
        migrations.RemoveField(model_name="idempotencyrecord", name="tenant"),
        migrations.AlterModelManagers(name="idempotencyrecord", managers=[]),
        migrations.AddField(
            model_name="idempotencyrecord",
            name="owner",
            field=models.CharField(default="platform", max_length=40),
            preserve_default=False,
        ),
        migrations.AddConstraint(
            model_name="idempotencyrecord",
            constraint=models.UniqueConstraint(
                fields=("owner", "key", "method", "path"), name="idempotency_unique_request"
            ),
        ),
    ]
