# The overview's SLA-breach trend and latest breaches (issue 19).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("hitl", "0003_metrics_indexes")]

    operations = [
        migrations.AddIndex(
            model_name="hitlrequest",
            index=models.Index(
                condition=models.Q(("breached_at__isnull", False)),
                fields=["tenant", "-breached_at"],
                name="hitl_request_breached",
            ),
        ),
    ]
