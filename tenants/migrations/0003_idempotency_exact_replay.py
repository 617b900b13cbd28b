"""Idempotent replays return the first response's exact bytes (JSONB reorders keys).

Rows stored before keep ``response_content`` NULL and replay their JSON as before.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("tenants", "0002_idempotency_owner")]

    operations = [
        migrations.AddField(
            model_name="idempotencyrecord",
            name="response_content",
            field=models.BinaryField(null=True),
        ),
    ]
