"""A day's usage is split over shard rows (issue 15): no row every run of a tenant takes in turn."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("tenants", "0003_idempotency_exact_replay")]

    operations = [
        migrations.AddField(
            model_name="usageday",
            name="shard",
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.RemoveConstraint(model_name="usageday", name="usage_day_unique"),
        migrations.AddConstraint(
            model_name="usageday",
            constraint=models.UniqueConstraint(
                fields=("tenant", "day", "shard"), name="usage_day_shard"
            ),
        ),
        migrations.AlterModelOptions(name="usageday", options={"ordering": ["day", "shard"]}),
    ]
