"""A covering index for insights over a range of runs (docs/performance.md)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('streams', '0007_run_model_figure_indexes'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['created_at'], include=('id', 'owner', 'model', 'provider', 'status', 'ttft_ms', 'tokens_per_s', 'duration_ms'), name='run_insights_cover'),
        ),
    ]
