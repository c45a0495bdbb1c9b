"""One model's runs sorted by TTFT, duration or tokens per second: an index each (docs/performance.md)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('streams', '0006_run_search_vector'),
    ]

    operations = [
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['model', 'ttft_ms', 'id'], name='run_model_ttft_id'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['model', 'duration_ms', 'id'], name='run_model_duration_id'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['model', 'tokens_per_s', 'id'], name='run_model_tokens_per_s_id'),
        ),
    ]
