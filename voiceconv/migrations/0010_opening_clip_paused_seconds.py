from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('voiceconv', '0009_opts_options_cost_timing'),
    ]

    operations = [
        migrations.AddField(
            model_name='agent',
            name='opening_clip',
            field=models.CharField(blank=True, help_text='GPT-Live only: a recorded clip (a name from VOICECONV CLIPS) played word for word as the call connects, before the greeting; the caller cannot talk over it.', max_length=100, verbose_name='opening clip (GPT-Live)'),
        ),
        migrations.AddField(
            model_name='call',
            name='session_paused_seconds',
            field=models.FloatField(blank=True, help_text='GPT-Live calls: of the session seconds, those billed at the paused (standby) rate, when the service reports the split.', null=True, verbose_name='paused session seconds'),
        ),
    ]
