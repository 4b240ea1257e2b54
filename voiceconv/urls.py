"""HTTP routes a project includes, e.g. ``path("twilio/", include("voiceconv.urls"))``."""

from django.urls import path

from voiceconv import health, metrics, recordings, sip_views, telephony_views, views, warm_transfer

app_name = "voiceconv"

urlpatterns = [
    path("incoming/", views.incoming_call, name="incoming-call"),
    path("status/", views.call_status, name="call-status"),
    path("health/", health.health_view, name="health"),
    path("metrics/", metrics.metrics_view, name="metrics"),
    path("outbound/answer/", telephony_views.outbound_answer, name="outbound-answer"),
    path("outbound/amd/", telephony_views.amd_status, name="amd-status"),
    path("transfer/status/", warm_transfer.status_view, name="warm-transfer-status"),
    path("recording/status/", recordings.recording_status, name="recording-status"),
    path("sip/openai/", sip_views.incoming_sip_call, name="sip-incoming"),
    path("recording/<int:pk>/audio/", recordings.recording_audio, name="recording-audio"),
]
