"""Playbooks carry the planner an agent can run (issue 16); existing rows get theirs here,
built from their steps exactly as a new extraction builds it."""

from typing import Any

from django.db import migrations, models


def backfill(apps: Any, schema_editor: Any) -> None:
    from learning.playbook_fsm import planner_for

    Playbook = apps.get_model("learning", "Playbook")
    for playbook in Playbook.objects.filter(planner={}).iterator():
        playbook.planner = planner_for(playbook.name, playbook.steps)
        playbook.save(update_fields=["planner"])


class Migration(migrations.Migration):
    dependencies = [
        ("learning", "0003_webhook_signed_content"),
    ]

    operations = [
        migrations.AddField(
            model_name="playbook",
            name="planner",
            field=models.JSONField(default=dict),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
