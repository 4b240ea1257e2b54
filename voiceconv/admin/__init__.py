"""Admin for voiceconv: agents, tool definitions, and read-only call records."""

import django_stubs_ext

# ``admin.ModelAdmin[Call]`` and friends, as django-stubs types them, subscriptable at run time.
django_stubs_ext.monkeypatch()

from voiceconv.admin import agents, calls, tools  # noqa: E402, F401
