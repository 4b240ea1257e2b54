from django.db import models  # noqa: F401

# Placeholder: ToolDefinition, ToolInvocation are being written.
ToolDefinition = ToolInvocation = None
