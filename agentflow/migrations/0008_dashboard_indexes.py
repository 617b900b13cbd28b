# The dashboard's runs list and overview trends read a tenant's runs by time (issue 19).

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("agentflow", "0007_run_plan_snapshot")]

    operations = [
        migrations.AddIndex(
            model_name="run",
            index=models.Index(fields=["tenant", "-created_at"], name="run_tenant_created"),
        ),
    ]
